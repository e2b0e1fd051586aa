"""Real English sentences for the search benchmark: documentation that Debian packages ship, not text we made up.

The corpus is the prose of Python 3.11's documentation (`python3.11-doc`, HTML) and of Perl's (`perl-doc`, POD):
together about 150,000 distinct sentences (88k + 65k) of reference manuals, tutorials, FAQs and release
notes. Both are installed here with `apt-get` when missing, so the benchmark runs on a fresh machine. Code
blocks are left out (HTML `<pre>`, POD's indented verbatim paragraphs); what remains is split with the
service's own sentence splitter (gateway/documents/sentences.py), and pieces of fewer than three words
(index entries, lone identifiers) are dropped.

`embed_through_service` sends the sentences to a running service's `/get_embedding_vectors/`, as a client
would, a few batches in flight; a second run finds them in the service's store and is quick.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import select

from gateway.documents.sentences import SentenceSplitter
from shared.schema import database_engine, embeddings
from tests.harness import PROJECT_ROOT, Service

PACKAGES = ("python3.11-doc", "perl-doc")
MINIMUM_LENGTH = 15  # MINIMUM_STRING_LENGTH_FOR_DOCUMENT_EMBEDDING's default, as for a document
MINIMUM_WORDS = 3
BATCH_TEXTS = 64
BATCHES_IN_FLIGHT = 4  # enough to keep two one-thread workers busy while the gateway answers the last batch

# Sphinx pages that are lists of names rather than prose.
_SKIPPED_PAGES = ("genindex", "py-modindex", "search")
_BLOCK_TAGS = {"p", "li", "dd", "dt", "td", "th", "h1", "h2", "h3", "h4", "h5", "blockquote", "div", "section",
               "table", "tr", "ul", "ol", "dl", "caption"}
_SKIPPED_TAGS = {"pre", "script", "style", "nav", "head"}
_POD_FORMATTING = re.compile(r"[A-Z]<(?:<+\s(.*?)\s>+|([^<>]*))>")  # C<code>, L<link>, C<< a->b >>, ...
_POD_PROSE_COMMANDS = ("=head1", "=head2", "=head3", "=head4", "=item")


def ensure_packages() -> None:
    """Install the documentation packages with apt-get (as root, or through sudo) when they are missing."""
    missing = [name for name in PACKAGES
               if subprocess.run(["dpkg", "-s", name], capture_output=True).returncode != 0]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print(f"  installing {' '.join(missing)} with apt-get", flush=True)
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                   env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def package_files(package: str, suffix: str) -> list[Path]:
    """The installed files of a Debian package whose names end in `suffix`, sorted."""
    listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=True).stdout
    return sorted(Path(line) for line in listing.splitlines() if line.endswith(suffix) and Path(line).is_file())


class _HtmlProse(HTMLParser):
    """The text of a Sphinx page's main part, a blank line at every block boundary, code blocks left out."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skipping = 0
        self._in_main = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note where the main part starts, where code starts and where a block starts."""
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        if tag == "div" and dict(attrs).get("role") == "main":
            self._in_main = True
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        """Note where code and blocks end."""
        if tag in _SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        """Keep prose of the main part, without Sphinx's pilcrow anchors."""
        if self._in_main and not self._skipping:
            self.parts.append(data.replace("\u00b6", ""))


def html_prose(path: Path) -> str:
    """The prose of one HTML documentation page."""
    parser = _HtmlProse()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return "".join(parser.parts)


def pod_prose(path: Path) -> str:
    """The prose of one POD file: text paragraphs, headings and items, formatting codes replaced by their text."""
    paragraphs = []
    for paragraph in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")):
        if not paragraph.strip() or paragraph[0] in " \t":  # indented: a verbatim (code) paragraph
            continue
        if paragraph.startswith("="):
            command, _, rest = paragraph.partition(" ")
            if command not in _POD_PROSE_COMMANDS:
                continue
            paragraph = rest
        previous = None
        while previous != paragraph:  # codes nest: B<C<x>>
            previous = paragraph
            paragraph = _POD_FORMATTING.sub(lambda match: match.group(1) or match.group(2) or "", paragraph)
        paragraphs.append(paragraph)
    return "\n\n".join(paragraphs)


def sentences() -> list[str]:
    """Every distinct sentence of the corpus, in a fixed order (package, file, position)."""
    ensure_packages()
    splitter = SentenceSplitter(MINIMUM_LENGTH)
    texts = [html_prose(path) for path in package_files("python3.11-doc", ".html")
             if not path.name.startswith(_SKIPPED_PAGES)]
    texts += [pod_prose(path) for path in package_files("perl-doc", ".pod")]
    found: dict[str, None] = {}
    for text in texts:
        for sentence in splitter.split(text):
            if len(sentence.split()) >= MINIMUM_WORDS:
                found.setdefault(sentence)
    return list(found)


def benchmark_sentences(count: int, seed: int = 17, words: tuple[int, int] = (5, 60)) -> list[str]:
    """`count` distinct corpus sentences of 5-60 words in a shuffled order fixed by `seed`: the same real texts
    for every case of a throughput comparison (comparing runs over different sentences moved ratios by 10%).
    The filtered corpus is cached in data/ (reading the packages takes ~20 s)."""
    cache = PROJECT_ROOT / "data" / f"real-sentences-{words[0]}-{words[1]}.json"
    if cache.is_file():
        found: list[str] = json.loads(cache.read_text())
    else:
        found = [text for text in sentences() if words[0] <= len(text.split()) <= words[1]]
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(found))
    random.Random(seed).shuffle(found)
    if count > len(found):
        raise ValueError(f"only {len(found)} sentences of {words[0]}-{words[1]} words")
    return found[:count]


def embed_through_service(base_url: str, texts: list[str], model: str) -> float:
    """Embed `texts` through the service's batch endpoint; returns texts per second."""
    batches = [texts[start:start + BATCH_TEXTS] for start in range(0, len(texts), BATCH_TEXTS)]
    started = time.perf_counter()
    done = 0
    with httpx.Client(base_url=base_url, timeout=600) as client:
        def embed(batch: list[str]) -> int:
            response = client.post("/get_embedding_vectors/", json={"texts": batch, "model_name": model})
            response.raise_for_status()
            return len(batch)

        with ThreadPoolExecutor(BATCHES_IN_FLIGHT) as pool:
            for count in pool.map(embed, batches):
                done += count
                if done % 10_000 < BATCH_TEXTS:
                    rate = done / (time.perf_counter() - started)
                    print(f"    {done:,} of {len(texts):,} embedded ({rate:,.0f}/s)", flush=True)
    return len(texts) / (time.perf_counter() - started)


def embedded_corpus(data_dir: Path, models_dir: Path, model: str) -> tuple[list[str], np.ndarray]:
    """The corpus's sentences and their vectors as the service computed them (in the order it stored them).

    The service runs on `data_dir` with one-thread workers on every core; its store is kept, so that a later
    run only reads it back.
    """
    texts = sentences()
    print(f"  corpus: {len(texts):,} distinct sentences from {', '.join(PACKAGES)}", flush=True)
    service = Service(data_dir, models_dir, env_overrides={"MODELS_TO_SERVE": model, "WORKERS_PER_MODEL": "0"})
    service.start()
    try:
        rate = embed_through_service(service.base_url, texts, model)
        print(f"  embedded through /get_embedding_vectors/ at {rate:,.0f} texts/s (cached ones included)", flush=True)
    finally:
        service.stop()
    engine = database_engine(service.database_url, read_only=True)
    query = (select(embeddings.c.text, embeddings.c.embedding).where(embeddings.c.model_name == model)
             .order_by(embeddings.c.id))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    engine.dispose()
    wanted = set(texts)
    rows = [row for row in rows if row[0] in wanted]
    vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), -1)
    return [row[0] for row in rows], vectors

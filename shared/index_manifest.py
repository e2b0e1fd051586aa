"""The saved search index of one model, as the writer leaves it on disk and the gateway finds it.

Layout under `Settings.index_dir`: one folder per model holding `index-<generation>.faiss` files and a
`manifest.json` naming the current one. The writer never changes a file in place: it writes a temporary
file, fsyncs it and renames it, then does the same for the manifest, so a reader that reads the manifest
always finds a complete index file beside it (the gateway memory-maps it; a file it still maps stays
readable after the writer removes it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from urllib.parse import quote

from shared.file_integrity import atomic_write_text

MANIFEST_NAME = "manifest.json"
EXACT = "exact"
APPROXIMATE = "approximate"
# What readers probed before nprobe was measured (an older manifest); the writer measures it at its next catch-up.
UNTUNED_NPROBE = 32


@dataclass(frozen=True)
class IndexManifest:
    """What one saved index holds.

    `rows_covered` is the largest `embeddings.id` of the model that the index contains: every row of the
    model with an id up to it is in the index (one writer assigns ids in commit order), none above it.
    """

    model: str
    generation: int
    rows_covered: int
    count: int
    dimensions: int
    kind: str  # EXACT or APPROXIMATE
    file: str
    saved_at: float
    lists: int = 0  # inverted lists of an approximate (IVF) index
    trained_on: int = 0  # rows the approximate index was trained on; the writer retrains as the model grows
    deletions_covered: int = 0  # the last `deletions` entry applied: deleted rows up to it are out of the index
    # An approximate index's tuning (workers/writer/recall.py): the lists to probe per query, chosen by the writer
    # as the fewest reaching `target_recall`, the recall@10 against exact search it measured there, the count of
    # vectors it was measured on, and [nprobe, recall] at 1, 2, 4, ... lists. nprobe 0: not measured.
    nprobe: int = 0
    recall: float = 0.0
    target_recall: float = 0.0
    tuned_on: int = 0
    recall_curve: list[list[float]] = field(default_factory=list)

    def search_nprobe(self, configured: int) -> int:
        """The lists a reader probes: SEARCH_IVF_NPROBE when set, else the measured nprobe (UNTUNED_NPROBE for an
        index saved before the writer measured it)."""
        return configured or self.nprobe or UNTUNED_NPROBE


def model_index_dir(index_root: Path, model: str) -> Path:
    """The folder of one model's index; model names are quoted so that none can leave `index_root`."""
    return index_root / quote(model, safe="")


def index_file_name(generation: int) -> str:
    """The file name of index generation `generation`, zero-padded so that names sort by generation."""
    return f"index-{generation:08d}.faiss"


def read_manifest(directory: Path) -> IndexManifest | None:
    """The manifest in `directory`, or None when there is none (or it is not one we can read)."""
    try:
        data = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    known = {f.name for f in fields(IndexManifest)}
    try:
        return IndexManifest(**{key: value for key, value in data.items() if key in known})
    except TypeError:
        return None


def write_manifest(directory: Path, manifest: IndexManifest) -> None:
    """Replace the manifest atomically (temporary file, fsync, rename, fsync of the folder)."""
    atomic_write_text(directory / MANIFEST_NAME, json.dumps(asdict(manifest), indent=1))

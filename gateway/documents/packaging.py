"""The answer to an upload: `<stem>.zip` holding `<stem>.json` (the sentences and their vectors as pandas
JSON) and `<stem>.metadata.json`.

`<stem>.json` is exactly what `DataFrame({"text": ..., "embedding": ...}).to_json(orient=...)` gives for the
whole document, as the original service answered, but it is written a slice of rows at a time straight into
the compressed zip member: the whole JSON (about 5 KB per 384-d sentence) never exists in memory at once.
Every orient is a fixed frame around per-row items that a slice of the DataFrame produces exactly
(tests/test_documents_packaging.py compares the result with pandas' own output for each orient).
"""

from __future__ import annotations

import json
import re
import unicodedata
import zipfile
from tempfile import SpooledTemporaryFile
from typing import IO, TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from gateway.errors import BadRequest

ORIENTS = ("records", "split", "index", "columns", "values", "table")
DEFAULT_ORIENT = "records"
ROWS_PER_SLICE = 256
SPOOL_BYTES = 16 * 1024 * 1024  # a larger zip goes to an anonymous temporary file
COMPRESS_LEVEL = 1  # JSON of floats compresses about as well at 1 as at 6, and several times faster
_ZIP64_FROM_BYTES = 1 << 30  # below 2 GiB a zip needs no ZIP64 records; keep a margin for the estimate
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def parse_orient(value: str | None) -> str:
    """A pandas `to_json` orient; an unknown one is a 422 naming the accepted ones."""
    orient = (value or DEFAULT_ORIENT).strip()
    if orient not in ORIENTS:
        raise BadRequest(f"unknown json_format {value!r}; use one of {', '.join(ORIENTS)}")
    return orient


def safe_stem(filename: str | None) -> str:
    """The client's file name without directories or extension, reduced to [A-Za-z0-9._-]: it only names
    the zip and its members (never a path on this machine), and goes into a Content-Disposition header."""
    name = re.split(r"[\\/]", filename or "")[-1]
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    return _UNSAFE_IN_NAME.sub("_", ascii_stem).strip("._-")[:100] or "document"


def dataframe(texts: list[str], vectors: np.ndarray, start: int = 0, stop: int | None = None) -> pd.DataFrame:
    """Rows start..stop of the document's DataFrame (the vectors stay float32 arrays: no float objects)."""
    import pandas as pd  # here, by the first document: importing it took 0.4 s of every gateway start

    stop = len(texts) if stop is None else stop
    return pd.DataFrame({"text": texts[start:stop], "embedding": list(vectors[start:stop])}, index=range(start, stop))


def json_pieces(texts: list[str], vectors: np.ndarray, orient: str) -> Iterator[str]:
    """`dataframe(texts, vectors).to_json(orient=orient)`, in pieces of at most ROWS_PER_SLICE rows."""
    count = len(texts)
    if count <= ROWS_PER_SLICE:
        yield dataframe(texts, vectors).to_json(orient=orient)
        return
    bounds = [(start, min(start + ROWS_PER_SLICE, count)) for start in range(0, count, ROWS_PER_SLICE)]

    def items(slice_orient: str, opening: str, closing: str, column: str | None = None) -> Iterator[str]:
        """The per-row items of each slice, without the slice's own frame, separated by commas."""
        for number, (start, stop) in enumerate(bounds):
            frame = dataframe(texts, vectors, start, stop)
            text = (frame[column] if column else frame).to_json(orient=slice_orient)
            yield ("," if number else "") + _strip_frame(text, opening, closing)

    if orient in ("records", "values"):
        yield "["
        yield from items(orient, "[", "]")
        yield "]"
    elif orient == "index":
        yield "{"
        yield from items(orient, "{", "}")
        yield "}"
    elif orient == "columns":
        for number, column in enumerate(("text", "embedding")):
            yield ("{" if number == 0 else "},") + json.dumps(column) + ":{"
            yield from items("index", "{", "}", column)
        yield "}}"
    elif orient == "split":
        first = dataframe(texts, vectors, 0, 1).to_json(orient="split")
        yield first[: first.index('"index":[')] + '"index":[' + ",".join(map(str, range(count))) + '],"data":['
        yield from items("values", "[", "]")
        yield "]}"
    elif orient == "table":
        first = dataframe(texts, vectors, 0, 1).to_json(orient="table")
        opening = first[: first.index('"data":[') + len('"data":[')]
        yield opening
        yield from items("table", opening, "]}")
        yield "]}"
    else:
        raise BadRequest(f"unknown json_format {orient!r}")


def _strip_frame(text: str, opening: str, closing: str) -> str:
    if not (text.startswith(opening) and text.endswith(closing)):
        raise AssertionError(f"pandas output does not have the expected frame {opening!r}...{closing!r}")
    return text[len(opening): len(text) - len(closing)]


def build_zip(stem: str, texts: list[str], vectors: np.ndarray, orient: str, metadata: dict[str, Any]) -> IO[bytes]:
    """The zip, in memory or (when large) in an anonymous temporary file, positioned at its start."""
    target: IO[bytes] = SpooledTemporaryFile(max_size=SPOOL_BYTES)  # read_blocks closes it
    try:
        write_zip(target, stem, texts, vectors, orient, metadata)
        target.seek(0)
    except BaseException:
        target.close()
        raise
    return target


def write_zip(target: IO[bytes], stem: str, texts: list[str], vectors: np.ndarray, orient: str,
              metadata: dict[str, Any]) -> None:
    """Write the zip of `build_zip` into `target` (a file a document job keeps, say)."""
    estimated = vectors.size * 14 + sum(len(text) for text in texts) * 2
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL) as archive:
        with archive.open(f"{stem}.json", "w", force_zip64=estimated > _ZIP64_FROM_BYTES) as member:
            for piece in json_pieces(texts, vectors, orient):
                member.write(piece.encode("utf-8"))
        archive.writestr(f"{stem}.metadata.json", json.dumps(metadata, indent=2))


def read_blocks(source: IO[bytes], block_bytes: int = 1 << 20) -> Iterator[bytes]:
    """The file's bytes in blocks, closing it at the end (a StreamingResponse body)."""
    try:
        while block := source.read(block_bytes):
            yield block
    finally:
        source.close()

"""The zip answer of a document upload (gateway/documents/packaging.py)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from gateway.documents import packaging
from gateway.documents.packaging import ORIENTS, build_zip, dataframe, json_pieces, parse_orient, safe_stem
from gateway.errors import BadRequest


def document(rows: int, dims: int = 4) -> tuple[list[str], np.ndarray]:
    texts = [f'Sentence {i} with "quotes", a / slash and ünïcode.' for i in range(rows)]
    return texts, np.random.default_rng(rows).standard_normal((rows, dims)).astype(np.float32)


@pytest.mark.parametrize("orient", ORIENTS)
@pytest.mark.parametrize("rows", [1, 3, 10])
def test_json_written_in_slices_equals_pandas_to_json(orient: str, rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packaging, "ROWS_PER_SLICE", 3)
    texts, vectors = document(rows)
    assert "".join(json_pieces(texts, vectors, orient)) == dataframe(texts, vectors).to_json(orient=orient)


@pytest.mark.parametrize("orient", ORIENTS)
def test_every_orient_round_trips_through_read_json(orient: str) -> None:
    texts, vectors = document(5)
    parsed = pd.read_json(io.StringIO("".join(json_pieces(texts, vectors, orient))), orient=orient)
    if orient == "values":
        parsed.columns = ["text", "embedding"]
    assert list(parsed["text"]) == texts
    assert np.allclose(np.array(parsed["embedding"].tolist(), dtype=np.float32), vectors, atol=1e-7)


def test_the_zip_holds_the_json_and_the_metadata_named_after_the_stem() -> None:
    texts, vectors = document(2)
    archive = zipfile.ZipFile(build_zip("report", texts, vectors, "records", {"model": "m", "sentence_count": 2}))
    assert sorted(archive.namelist()) == ["report.json", "report.metadata.json"]
    assert json.loads(archive.read("report.metadata.json")) == {"model": "m", "sentence_count": 2}
    assert [row["text"] for row in json.loads(archive.read("report.json"))] == texts


@pytest.mark.parametrize(("filename", "stem"), [
    ("report.pdf", "report"),
    ("annual.report.2024.txt", "annual.report.2024"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\notes.txt", "notes"),
    ("résumé final.pdf", "resume_final"),
    ('evil"; name=x.txt', "evil_name_x"),
    ("...", "document"),
    ("", "document"),
    ("東京.txt", "document"),
])
def test_the_stem_keeps_no_directory_and_only_safe_characters(filename: str, stem: str) -> None:
    assert safe_stem(filename) == stem


def test_an_unknown_orient_is_refused_naming_the_accepted_ones() -> None:
    with pytest.raises(BadRequest, match="records, split, index, columns, values, table"):
        parse_orient("rows")


def test_the_default_orient_is_records() -> None:
    assert parse_orient(None) == "records"

"""The gateway's row journal (gateway/row_journal.py): what one gateway answered with, its successor replays."""

from __future__ import annotations

from pathlib import Path

from gateway.row_journal import RowJournal
from shared.protocol import DocumentWrite, EmbeddingRow, StoredDocument


def _rows(*texts: str) -> list[EmbeddingRow]:
    return [EmbeddingRow(text, f"h-{text}", "m", b"\x00\x01" * 4, 2, request_time=1.5) for text in texts]


def test_rows_not_yet_batched_and_batches_not_acknowledged_are_replayed(tmp_path: Path) -> None:
    killed = RowJournal(tmp_path)
    killed.recover()
    killed.append(_rows("a", "b"))
    killed.seal(1)  # sent, never acknowledged
    killed.append(_rows("c"))  # still waiting for the next batch
    assert sorted(row.text for row in RowJournal(tmp_path).recover().rows) == ["a", "b", "c"]


def test_an_acknowledged_batch_is_not_replayed(tmp_path: Path) -> None:
    journal = RowJournal(tmp_path)
    journal.recover()
    journal.append(_rows("committed"))
    journal.seal(1)
    journal.forget(1)
    journal.append(_rows("pending"))
    assert [row.text for row in RowJournal(tmp_path).recover().rows] == ["pending"]


def test_a_document_write_is_replayed_whole(tmp_path: Path) -> None:
    journal = RowJournal(tmp_path)
    journal.recover()
    document = DocumentWrite(batch_id=7, document=StoredDocument("f", "m", "a.pdf", "application/pdf", b"%PDF", 1,
                                                                 b"results"), rows=_rows("s"), text_hashes=["h-s"])
    journal.record(7, document)
    assert RowJournal(tmp_path).recover().documents == [document]


def test_replayed_files_are_removed_once_cleared_and_a_crash_before_that_replays_them_again(tmp_path: Path) -> None:
    RowJournal(tmp_path).append(_rows("left behind"))
    successor = RowJournal(tmp_path)
    assert len(successor.recover().rows) == 1
    assert len(RowJournal(tmp_path).recover().rows) == 1  # the successor died before clearing: replayed again
    successor.clear_recovered()
    assert RowJournal(tmp_path).recover().rows == []


def test_a_record_cut_short_keeps_the_complete_records_before_it(tmp_path: Path) -> None:
    journal = RowJournal(tmp_path)
    journal.recover()
    journal.append(_rows("whole"))
    journal.close()
    with open(tmp_path / "pending.rows", "ab") as handle:
        handle.write(b"\x91\x83")  # the start of another record, then nothing
    assert [row.text for row in RowJournal(tmp_path).recover().rows] == ["whole"]

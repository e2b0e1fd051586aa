"""The wire format: every message survives encode → decode, vectors ride as raw float32 frames."""

from __future__ import annotations

from typing import get_args

import msgpack
import numpy as np
import pytest

from shared.protocol import (
    Ack,
    Bye,
    Cancel,
    Control,
    ControlReply,
    Delete,
    Deleted,
    DeletedRow,
    DocumentWrite,
    Embed,
    EmbeddingRow,
    Failure,
    Fatal,
    Heartbeat,
    Kind,
    Message,
    ModelHealth,
    Ping,
    Pong,
    ProtocolError,
    RamdiskState,
    RamdiskWorker,
    Ready,
    RegisteredWorker,
    Reregister,
    Results,
    SearchState,
    Status,
    Stored,
    StoredDocument,
    StoreMarks,
    Tokenize,
    Tokens,
    Write,
    decode,
    encode,
    kind_of,
)

MESSAGES = [
    Ready(model="m", worker_id=1, pid=2, dimensions=384, max_tokens=256, credits=8, threads=1),
    Heartbeat(),
    Embed(request_id=7, texts=["a", "ß", ""]),
    Failure(request_id=7, reason="boom"),
    Cancel(request_id=7),
    Bye(),
    Fatal(reason="oom"),
    Reregister(),
    Write(batch_id=3, rows=[EmbeddingRow("x", "h", "m", b"\x00\x01", 1, ip_address="127.0.0.1", request_time=1.5,
                                         collection="c")]),
    Ack(batch_id=3, committed=1),
    Status(role="worker", pid=5, state="ready", model="m", worker_id=1, counters={"texts": 2}, mapped_from="/m.gguf",
           weight_repack=False),
    GATEWAY_STATUS := Status(role="gateway", pid=6, state="ready", workers=[RegisteredWorker("m/1/5", "m", 5, 1, 0, False)],
                             queues={"m": 3}, search=[SearchState("m", 2, 10, "exact", 1, True)]),
    Control(command="scale", arguments={"model": "m", "count": 2}),
    ControlReply(data={"ok": True}),
    ControlReply(health=[ModelHealth("m", desired=1, ready=0, starting=1, next_restart_in=2.5)]),
    ControlReply(ramdisk=RamdiskState(True, "/mnt/r", False, True, "", "unmounted", {"m": "/mnt/r/m.gguf"},
                                      {"m": "/d/m.gguf"}, [RamdiskWorker("m", 1, 5, "/d/m.gguf", "/d/m.gguf", False)])),
    DocumentWrite(batch_id=4, document=StoredDocument("f", "m", "a.pdf", "application/pdf", b"%PDF", 1, b"r"),
                  rows=[EmbeddingRow("s", "h", "m", b"\x00", 1, document_id=None)], text_hashes=["h"]),
    Ping(),
    Pong(),
    Pong(marks=StoreMarks(rows=41, deletions=3)),
    Delete(request_id=8, target="collection", name="pets"),
    Deleted(request_id=8, found=True, rows=[DeletedRow(12, "m", "h")]),
    Tokenize(request_id=9, texts=["Hello world", ""], add_special_tokens=False),
    Tokens(request_id=9, token_ids=[[7592, 2088], []]),
    Stored(models=["m", "n"], prefixes=[bytes(range(16)), bytes(8)]),
    Stored(models=["m"], prefixes=[bytes(8)], marks=StoreMarks(rows=9, deletions=0), rows_after=8),
]


def test_struct_fields_travel_as_arrays_not_maps() -> None:
    frames = encode(GATEWAY_STATUS)
    header = msgpack.unpackb(frames[1])
    assert header["workers"] == [["m/1/5", "m", 5, 1, 0, False]]
    assert header["search"] == [["m", 2, 10, "exact", 1, True]]


def test_the_examples_cover_every_message_type_but_results() -> None:
    # Results carries a raw vector frame and has tests of its own below.
    assert {type(m) for m in MESSAGES} == set(get_args(Message)) - {Results}


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: Message) -> None:
    assert decode(encode(message)) == message


def test_vectors_travel_as_one_raw_float32_frame() -> None:
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    frames = encode(Results(request_ids=[1], rows=[3], token_counts=[1, 2, 3], vectors=vectors))
    assert len(frames) == 3 and frames[2] == vectors.tobytes()
    decoded = decode(frames)
    assert isinstance(decoded, Results)
    assert decoded.vectors.dtype == np.float32 and np.array_equal(decoded.vectors, vectors)
    assert decoded.token_counts == [1, 2, 3]


def test_results_give_each_request_its_own_rows_and_token_counts_in_order() -> None:
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    decoded = decode(encode(Results(request_ids=[7, 5], rows=[2, 1], token_counts=[4, 5, 6], vectors=vectors)))
    assert isinstance(decoded, Results)
    (first_id, first), (second_id, second) = decoded.answers()
    assert (first_id, first.token_counts, first.vectors.tolist()) == (7, [4, 5], vectors[:2].tolist())
    assert (second_id, second.token_counts, second.vectors.tolist()) == (5, [6], vectors[2:].tolist())


def test_results_whose_rows_do_not_add_up_to_its_vectors_raise_protocol_error() -> None:
    vectors = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(ProtocolError):
        decode(encode(Results(request_ids=[1, 2], rows=[1, 1], token_counts=[1, 1, 1], vectors=vectors)))


def test_decoded_vectors_are_a_view_of_the_received_frame_not_a_copy() -> None:
    vectors = np.arange(8, dtype=np.float32).reshape(2, 4)
    frames = encode(Results(request_ids=[1], rows=[2], token_counts=[1, 1], vectors=vectors))
    received = bytearray(frames[2])  # a frame as ZeroMQ hands it over (copy=False gives a buffer)
    decoded = decode([frames[0], frames[1], memoryview(received)])
    assert isinstance(decoded, Results)
    received[:4] = np.float32(42.0).tobytes()  # a change to the frame shows through: no copy was made
    assert decoded.vectors[0, 0] == 42.0
    assert decoded.answers()[0][1].vectors[0, 0] == 42.0


def test_the_type_is_read_from_the_first_byte_without_decoding() -> None:
    assert kind_of(encode(Embed(request_id=1, texts=["x"]))) == Kind.EMBED
    assert kind_of([b"\xff", b""]) is None


@pytest.mark.parametrize("frames", [
    [],
    [b"\x03"],
    [b"\xfe", msgpack.packb({})],
    [b"\x03", b"\xc1"],
    [b"\x03", msgpack.packb([1, 2])],
    [b"\x03", msgpack.packb({"request_id": 1})],
    [bytes((Kind.RESULTS,)), msgpack.packb({"request_ids": [1], "rows": [2], "token_counts": [1, 1],
                                            "shape": [2, 2]})],
], ids=["empty", "no header", "unknown type", "bad msgpack", "not a map", "missing field", "missing vectors"])
def test_malformed_frames_raise_protocol_error(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        decode(frames)


def test_unknown_header_fields_are_ignored_so_newer_peers_can_add_fields() -> None:
    frames = [bytes((Kind.CANCEL,)), msgpack.packb({"request_id": 4, "added_later": True})]
    assert decode(frames) == Cancel(request_id=4)

"""Every message that crosses a process boundary, and its encoding.

A message travels as ZeroMQ frames `[type: 1 byte] [header: msgpack] [raw frames...]` (a ROUTER adds the
peer identity in front). The type byte is read without decoding anything; vectors ride as raw float32 frames
and are read back with `np.frombuffer`, so no float ever becomes a Python object on the way.

Nothing else in the project builds or parses frames: call `encode(message)` and `decode(frames)`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field, fields
from enum import IntEnum
from operator import attrgetter
from typing import Any, Callable, ClassVar, Sequence, Union, get_args, get_origin, get_type_hints

import msgpack
import numpy as np

PROTOCOL_VERSION = 2  # 2: RESULTS answers several requests at once
# A worker's exit code when its model cannot run here (every loading's canary failed): the supervisor marks the
# model failed with the reason from the worker's last STATUS instead of restarting it into the same crash.
EXIT_MODEL_UNUSABLE = 78  # EX_CONFIG in sysexits.h


class ProtocolError(ValueError):
    """A frame sequence that is not a message of this protocol."""


class Kind(IntEnum):
    """The type byte in front of every message's frames, one value per message class."""

    # Numbers are part of the wire format. Ranges: 1-19 backbone, 20-29 documents, 30-39 kept for
    # search, 40-49 metrics and health, 50-59 tokenizer.
    READY = 1
    HEARTBEAT = 2
    EMBED = 3
    # 4 was protocol 1's RESULT (one request per message), replaced by RESULTS.
    FAILURE = 5
    CANCEL = 6
    BYE = 7
    FATAL = 8
    REREGISTER = 9
    WRITE = 10
    ACK = 11
    STATUS = 12
    CONTROL = 13
    CONTROL_REPLY = 14
    STORED = 15
    RESULTS = 16
    DOCUMENT_WRITE = 20
    DELETE = 30
    DELETED = 31
    PING = 40
    PONG = 41
    TOKENIZE = 50
    TOKENS = 51


@dataclass(frozen=True)
class Ready:
    """Worker → gateway: the model is loaded; the worker may be given up to `credits` requests at once."""

    KIND: ClassVar[Kind] = Kind.READY
    model: str
    worker_id: int
    pid: int
    dimensions: int
    max_tokens: int
    credits: int
    threads: int
    protocol: int = PROTOCOL_VERSION
    # For token-id inputs (0 from a worker that does not take them): ids must be below vocab_size, and an
    # input may have at most max_tokens - special_tokens ids, the model adding its own (e.g. [CLS], [SEP]).
    vocab_size: int = 0
    special_tokens: int = 0
    pooling: str = ""  # how token vectors become the text's vector ("mean", "cls", "last"), for the answers' metadata


@dataclass(frozen=True)
class Heartbeat:
    """Either way, every heartbeat interval. Any message proves liveness; this one is sent when idle."""

    KIND: ClassVar[Kind] = Kind.HEARTBEAT


@dataclass(frozen=True)
class Embed:
    """Gateway → worker: embed these texts (one request; the worker batches across requests).

    Or, when `token_ids` is given (and `texts` empty), these token-id lists: a text's tokens without the
    model's special tokens, which the worker adds as it does for a text.
    """

    KIND: ClassVar[Kind] = Kind.EMBED
    request_id: int
    texts: list[str]
    token_ids: list[list[int]] = field(default_factory=list)


@dataclass(frozen=True)
class Answer:
    """One request's share of a RESULTS: its L2-normalised float32 rows, one per text in order, and the tokens
    each used. Not a message of its own: what the gateway hands the request that asked."""

    vectors: np.ndarray
    token_counts: list[int]


@dataclass(frozen=True)
class Results:
    """Worker → gateway: the requests that one llama.cpp call finished, in one message.

    Under load a call ends many single-text requests at once; one message for all of them, rather than one
    per request, saves the gateway a receive, a decode and a wake-up per request. `vectors` stacks the requests'
    rows in order: the first `rows[0]` rows (and entries of the flat `token_counts`) are `request_ids[0]`'s,
    the next `rows[1]` are `request_ids[1]`'s, and so on. `batch_sizes`: the sequences in each llama.cpp call
    the worker made since its previous RESULTS (only the worker knows how requests were grouped; the gateway's
    metrics report them).
    """

    KIND: ClassVar[Kind] = Kind.RESULTS
    request_ids: list[int]
    rows: list[int]
    token_counts: list[int]
    vectors: np.ndarray = field(compare=False)
    batch_sizes: list[int] = field(default_factory=list)

    def answers(self) -> list[tuple[int, Answer]]:
        """Each request id with its answer; the vectors are views of this message's array, not copies."""
        answers = []
        start = 0
        for request_id, count in zip(self.request_ids, self.rows):
            end = start + count
            answers.append((request_id, Answer(self.vectors[start:end], self.token_counts[start:end])))
            start = end
        return answers


@dataclass(frozen=True)
class Failure:
    """Worker → gateway: this request cannot be served; `reason` is shown to the client."""

    KIND: ClassVar[Kind] = Kind.FAILURE
    request_id: int
    reason: str


@dataclass(frozen=True)
class Cancel:
    """Gateway → worker, best effort: the client gave up on this request."""

    KIND: ClassVar[Kind] = Kind.CANCEL
    request_id: int


@dataclass(frozen=True)
class Bye:
    """Worker → gateway: send me nothing new; I finish what I hold, then exit."""

    KIND: ClassVar[Kind] = Kind.BYE


@dataclass(frozen=True)
class Fatal:
    """Worker → gateway: I am about to die; requeue what I hold."""

    KIND: ClassVar[Kind] = Kind.FATAL
    reason: str


@dataclass(frozen=True)
class Reregister:
    """Gateway → a peer it does not know (e.g. after a gateway restart): send READY again."""

    KIND: ClassVar[Kind] = Kind.REREGISTER


@dataclass(frozen=True, slots=True)
class EmbeddingRow:
    """One computed vector as the `embeddings` table keeps it: built once by the gateway, mapped to columns once by
    the writer (workers/writer/store.py). Travels as a msgpack array in field order."""

    text: str
    text_hash: str  # SHA3-256 of the text
    model_name: str
    embedding: bytes  # float32
    dimensions: int
    ip_address: str | None = None
    request_time: float | None = None  # Unix seconds
    response_time: float | None = None
    total_time: float | None = None
    document_id: int | None = None
    # Add the text to this collection too (memberships table). A text that was a cache hit travels as a row
    # as well when it names a collection: the insert leaves the stored row as it is and records the membership.
    collection: str = ""


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """An embedded document as the `documents` and `document_embeddings` tables keep it (see DocumentWrite)."""

    file_hash: str  # SHA3-256 of the file
    model_name: str
    filename: str
    mimetype: str
    file_data: bytes
    sentence_count: int
    results: bytes  # the stored form of the answer (encode_results in gateway/documents/results_blob.py)
    ip_address: str | None = None
    request_time: float | None = None  # Unix seconds
    response_time: float | None = None
    total_time: float | None = None


@dataclass(frozen=True)
class Write:
    """Gateway → writer: store these rows. `batch_id` makes a re-send after a writer restart idempotent."""

    KIND: ClassVar[Kind] = Kind.WRITE
    batch_id: int
    rows: list[EmbeddingRow]


@dataclass(frozen=True)
class Ack:
    """Writer → gateway: the batch is committed (or was already)."""

    KIND: ClassVar[Kind] = Kind.ACK
    batch_id: int
    committed: int


@dataclass(frozen=True, slots=True)
class StoreMarks:
    """How far the store has got, as its one writer knows it; a gateway polls the store only when it is behind
    these (gateway/store_polls.py)."""

    rows: int  # the largest row id the store ever gave out (deleted rows included): every row up to it is committed
    deletions: int  # the last entry of the deletions log (0 when nothing was ever deleted)


@dataclass(frozen=True)
class Stored:
    """Writer → every gateway it has heard from lately: the text hashes of a commit, per model, as their first
    8 bytes (gateway/stored_hashes.py). So a gateway that did not compute a text looks it up in the store from
    the commit on, rather than computing it again until its next poll of the store's rows. Also sent, without
    hashes, after a delete: its `marks` tell the gateways there are deletions to read."""

    KIND: ClassVar[Kind] = Kind.STORED
    models: list[str]
    prefixes: list[bytes]  # per model, in order: the first 8 bytes of each text hash, concatenated
    # The store's marks after this commit, and its rows mark before it: the rows of the commit are those with an
    # id in (rows_after, marks.rows], so a gateway that knew every row up to rows_after now knows every row up to
    # marks.rows without reading the store. None: the writer could not read its marks.
    marks: StoreMarks | None = None
    rows_after: int | None = None

    @classmethod
    def of(cls, rows: Sequence[EmbeddingRow], marks: StoreMarks | None = None,
           rows_after: int | None = None) -> Stored:
        """The message for committed `rows` (text hashes are hex)."""
        by_model: dict[str, list[str]] = {}
        for row in rows:
            by_model.setdefault(row.model_name, []).append(row.text_hash)
        return cls(models=list(by_model), prefixes=[hash_prefixes(hashes) for hashes in by_model.values()],
                   marks=marks, rows_after=rows_after)


def hash_prefixes(hashes: Sequence[str]) -> bytes:
    """The first 8 bytes of each hex text hash, concatenated: how STORED carries them, and how a gateway keeps them."""
    return bytes.fromhex("".join(text_hash[:16] for text_hash in hashes))


@dataclass(frozen=True, slots=True)
class RegisteredWorker:
    """A worker as a gateway's broker holds it (the gateway's STATUS lists them; `status` shows them)."""

    identity: str
    model: str
    pid: int
    threads: int
    in_flight: int
    leaving: bool


@dataclass(frozen=True, slots=True)
class SearchState:
    """A model's search index as a gateway has loaded it."""

    model: str
    generation: int  # 0: no index saved yet
    indexed: int  # rows in the loaded generation
    kind: str  # "exact" or "ivf"; "" without a generation
    tail: int  # recent rows held beside it until a generation covers them
    complete: bool  # False while rows exist that neither the generation nor the tail holds (searches answer 503)


@dataclass(frozen=True)
class Status:
    """Any child → supervisor's event socket: who I am, my state and my counters. Sent every second.

    The fields after `counters` belong to one role each and keep their defaults in the others' reports.
    """

    KIND: ClassVar[Kind] = Kind.STATUS
    role: str  # "gateway", "writer" or "worker"
    pid: int
    state: str  # "ready", "leaving" or "failed"; a worker: "registering" until a gateway has answered it
    model: str = ""
    worker_id: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    reason: str = ""  # a worker in state "failed": why its model cannot be served here
    mapped_from: str = ""  # a worker: the model file it was given
    weight_repack: bool | None = None  # a worker: how it loaded the weights (LLAMA_WEIGHT_REPACK)
    workers: list[RegisteredWorker] = field(default_factory=list)  # a gateway: the workers registered with it
    queues: dict[str, int] = field(default_factory=dict)  # a gateway: requests waiting for a worker, per model
    search: list[SearchState] = field(default_factory=list)  # a gateway: its search indexes


@dataclass(frozen=True)
class Control:
    """CLI or gateway → supervisor's control socket: one of the commands `Supervisor._command` knows."""

    KIND: ClassVar[Kind] = Kind.CONTROL
    command: str  # "status", "stop", "scale", "load", "models", "pull", "health" or "ramdisk"
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelHealth:
    """An installed model as the supervisor knows it (desired 0: not loaded): the facts behind every 503 and
    `/ready` reason (shared/model_health.py turns them into words), and the gateway's list of installed models."""

    model: str
    desired: int  # workers the operator asked for
    ready: int  # workers serving
    starting: int  # workers alive, loading or running their canary
    failed_reason: str = ""  # set when the model cannot run here; only `scale` tries again
    deaths: int = 0  # worker deaths in the current backoff streak, over all the model's slots
    streak_seconds: float = 0.0  # from the first of those deaths to now
    last_exit: str = ""  # how the last one ended: "killed by SIGSEGV"
    next_restart_in: float | None = None  # the soonest restart of a slot that waits out its backoff


@dataclass(frozen=True, slots=True)
class RamdiskWorker:
    """Where one worker's model comes from, as the supervisor's `ramdisk` command reports it."""

    model: str
    worker_id: int
    pid: int
    given: str  # the path the worker was started with
    mapped_from: str  # what /proc/<pid>/maps shows ("" before it has loaded)
    stopping: bool


@dataclass(frozen=True, slots=True)
class RamdiskState:
    """The supervisor's RAM-disk state: the answer to every `ramdisk` command."""

    enabled: bool  # USE_RAMDISK
    path: str
    clearing: bool  # workers are moving to the files on disk; unmounted once none maps from the RAM disk
    settled: bool  # every worker maps the file its model is meant to be served from now, nothing pending
    last_error: str
    last_result: str
    model_paths: dict[str, str]  # the file new workers of each model get
    disk_paths: dict[str, str]  # the installed files
    workers: list[RamdiskWorker]


@dataclass(frozen=True)
class ControlReply:
    """Supervisor → CLI or gateway. `error` is empty on success; the other fields answer one command each.

    `data` answers `status`, `stop`, `scale`, `load`, `models` and `pull`: reports the CLI prints and the admin
    API returns as JSON for an operator (and tests read by key), so they stay documents rather than structs.
    `error_kind` sorts a refusal for the admin API's status code: "not_found" (no such model installed) or
    "refused" (anything else the supervisor turned down).
    """

    KIND: ClassVar[Kind] = Kind.CONTROL_REPLY
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    error_kind: str = ""
    health: list[ModelHealth] = field(default_factory=list)  # `health`
    ramdisk: RamdiskState | None = None  # `ramdisk`


@dataclass(frozen=True)
class DocumentWrite:
    """Gateway → writer: store one embedded document in one transaction; answered by ACK(batch_id) after commit.

    `rows`: the sentence rows computed for it. `text_hashes`: every distinct kept sentence, so rows already
    stored without a document are linked to it. Idempotent on (file_hash, model_name), like WRITE on its rows.
    """

    KIND: ClassVar[Kind] = Kind.DOCUMENT_WRITE
    batch_id: int
    document: StoredDocument
    rows: list[EmbeddingRow]
    text_hashes: list[str]


@dataclass(frozen=True)
class Delete:
    """Gateway → writer: delete stored rows, answered by DELETED(request_id) after the commit.

    `target` "string": the rows of the text with hash `name` (of `model_name`, or of every model when empty);
    "collection": the collection `name`; "document": the document whose file hash is `name`. Deleting a
    collection or document removes its memberships and the rows of texts left in no collection or document.
    """

    KIND: ClassVar[Kind] = Kind.DELETE
    request_id: int
    target: str
    name: str
    model_name: str = ""


@dataclass(frozen=True, slots=True)
class DeletedRow:
    """One row a DELETE removed, so a gateway drops it from its cache and search tail at once."""

    row_id: int
    model_name: str
    text_hash: str


@dataclass(frozen=True)
class Deleted:
    """Writer → gateway: what a DELETE removed (`found` False: nothing matched; `error`: it could not be done)."""

    KIND: ClassVar[Kind] = Kind.DELETED
    request_id: int
    found: bool
    rows: list[DeletedRow] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True)
class Tokenize:
    """Gateway → worker: these texts' token ids in the model's own tokenizer, untruncated (POST /tokenize).

    Credited, retried and cancelled like an EMBED; answered by TOKENS, or FAILURE.
    """

    KIND: ClassVar[Kind] = Kind.TOKENIZE
    request_id: int
    texts: list[str]
    add_special_tokens: bool = True  # the tokens the model adds when it embeds ([CLS], [SEP] for BERT)


@dataclass(frozen=True)
class Tokens:
    """Worker → gateway: one token-id list per text of a TOKENIZE, in order."""

    KIND: ClassVar[Kind] = Kind.TOKENS
    request_id: int
    token_ids: list[list[int]]


@dataclass(frozen=True)
class Ping:
    """Gateway → writer, every heartbeat interval: are you alive? (readiness)"""

    KIND: ClassVar[Kind] = Kind.PING


@dataclass(frozen=True)
class Pong:
    """Writer → gateway: the answer to PING, sent from the writer's main loop (so a stuck loop goes silent), with
    the store's marks (None: the writer could not read them), so an idle gateway need not poll the store."""

    KIND: ClassVar[Kind] = Kind.PONG
    marks: StoreMarks | None = None


Message = Union[
    Ready, Heartbeat, Embed, Results, Failure, Cancel, Bye, Fatal, Reregister, Write, Ack, Status, Control,
    ControlReply, Ping, Pong, DocumentWrite, Delete, Deleted, Tokenize, Tokens, Stored,
]
_BY_KIND: dict[int, type] = {cls.KIND: cls for cls in get_args(Message)}
# Field names per message type, read once: dataclasses.asdict deep-copies every list (a request's texts, a
# write's rows) and measured as 8% of the gateway's CPU per request.
_FIELDS: dict[type, tuple[str, ...]] = {cls: tuple(f.name for f in fields(cls)) for cls in _BY_KIND.values()}
_EMPTY = msgpack.packb({})

# Structs inside messages travel as msgpack arrays in field order: no key names repeated per row.
_STRUCTS = (EmbeddingRow, StoredDocument, RegisteredWorker, SearchState, ModelHealth, RamdiskWorker, RamdiskState,
            DeletedRow, StoreMarks)


@dataclass(frozen=True)
class _Nested:
    """A field whose value is a struct, a list of structs or an optional struct: how it packs and unpacks."""

    name: str
    pack: Callable[[Any], Any]
    unpack: Callable[[Any], Any]


def _nested_fields(cls: type) -> tuple[_Nested, ...]:
    """The struct-valued fields of `cls`, read from its type hints."""
    nested = []
    for name, hint in get_type_hints(cls).items():
        if name == "KIND":
            continue
        args = get_args(hint)
        if hint in _STRUCTS:
            nested.append(_Nested(name, *_struct_codec(hint)))
        elif get_origin(hint) is list and args[0] in _STRUCTS:
            nested.append(_Nested(name, *_each(*_struct_codec(args[0]))))
        elif get_origin(hint) in (Union, types.UnionType) and type(None) in args and args[0] in _STRUCTS:
            nested.append(_Nested(name, *_optional(*_struct_codec(args[0]))))
    return tuple(nested)


Codec = tuple[Callable[[Any], Any], Callable[[Any], Any]]


def _each(pack: Callable[[Any], Any], unpack: Callable[[Any], Any]) -> Codec:
    return (lambda values: [pack(value) for value in values]), (lambda arrays: [unpack(array) for array in arrays])


def _optional(pack: Callable[[Any], Any], unpack: Callable[[Any], Any]) -> Codec:
    return ((lambda value: None if value is None else pack(value)),
            (lambda array: None if array is None else unpack(array)))


def _struct_codec(struct: type) -> Codec:
    """A struct to the array of its field values and back, its own struct-valued fields packed in turn."""
    values = attrgetter(*(f.name for f in fields(struct)))
    inner = _nested_fields(struct)
    if not inner:
        return values, lambda array: struct(*array)
    positions = [(i, nested) for i, f in enumerate(fields(struct)) for nested in inner if nested.name == f.name]

    def pack(value: Any) -> list[Any]:
        array = list(values(value))
        for i, nested in positions:
            array[i] = nested.pack(array[i])
        return array

    def unpack(array: list[Any]) -> Any:
        array = list(array)
        for i, nested in positions:
            array[i] = nested.unpack(array[i])
        return struct(*array)
    return pack, unpack


_NESTED: dict[type, tuple[_Nested, ...]] = {cls: _nested_fields(cls) for cls in _BY_KIND.values()}
_pack_row, _ = _struct_codec(EmbeddingRow)


def pack_rows(rows: list[EmbeddingRow]) -> list[tuple[Any, ...]]:
    """Rows as msgpack-ready arrays in field order (also the gateway's journal format)."""
    return [_pack_row(row) for row in rows]


def unpack_rows(arrays: list[list[Any]]) -> list[EmbeddingRow]:
    """The rows `pack_rows` packed."""
    return [EmbeddingRow(*values) for values in arrays]


def _header(message: Message) -> dict[str, Any]:
    values = {name: getattr(message, name) for name in _FIELDS[type(message)]}
    for nested in _NESTED[type(message)]:
        values[nested.name] = nested.pack(values[nested.name])
    return values


def _from_header(cls: type, header: dict[str, Any]) -> Message:
    known = {k: v for k, v in header.items() if k in _FIELDS[cls]}
    for nested in _NESTED[cls]:
        if nested.name in known:
            known[nested.name] = nested.unpack(known[nested.name])
    return cls(**known)


def encode(message: Message) -> list[bytes]:
    """Frames for `message`, without any routing identity."""
    kind = bytes((message.KIND,))
    if isinstance(message, Results):
        vectors = np.ascontiguousarray(message.vectors, dtype=np.float32)
        header = {"request_ids": message.request_ids, "rows": message.rows, "token_counts": message.token_counts,
                  "shape": list(vectors.shape), "batch_sizes": message.batch_sizes}
        return [kind, msgpack.packb(header), vectors.tobytes()]
    return [kind, msgpack.packb(_header(message)) if _FIELDS[type(message)] else _EMPTY]


def decode(frames: Sequence[bytes | memoryview]) -> Message:
    """The message in `frames` (identity already removed). Raises ProtocolError on anything malformed."""
    if len(frames) < 2 or len(frames[0]) != 1:
        raise ProtocolError(f"expected [type, header, ...], got {len(frames)} frames")
    cls = _BY_KIND.get(bytes(frames[0])[0])
    if cls is None:
        raise ProtocolError(f"unknown message type {bytes(frames[0])[0]}")
    try:
        header = msgpack.unpackb(frames[1], strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"undecodable {cls.__name__} header: {exc}") from exc
    if not isinstance(header, dict):
        raise ProtocolError(f"{cls.__name__} header is not a map")
    try:
        if cls is Results:
            shape = tuple(header.pop("shape"))
            if len(frames) != 3:
                raise ProtocolError("RESULTS needs one vector frame")
            vectors = np.frombuffer(frames[2], dtype=np.float32).reshape(shape)
            # A newer peer's extra fields are ignored.
            results = Results(vectors=vectors,
                              **{k: v for k, v in header.items() if k in _FIELDS[Results] and k != "vectors"})
            if len(results.rows) != len(results.request_ids) or sum(results.rows) != len(vectors) \
                    or len(results.token_counts) != len(vectors):
                raise ProtocolError("RESULTS rows, request ids, token counts and vectors do not match")
            return results
        return _from_header(cls, header)
    except (TypeError, ValueError, KeyError) as exc:
        raise ProtocolError(f"malformed {cls.__name__}: {exc}") from exc


def kind_of(frames: Sequence[bytes | memoryview]) -> Kind | None:
    """The message type, read from the first byte without decoding the header."""
    if not frames or len(frames[0]) != 1:
        return None
    try:
        return Kind(bytes(frames[0])[0])
    except ValueError:
        return None

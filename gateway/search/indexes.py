"""Semantic search in the gateway: the writer's latest saved index per model, plus the tail of newer rows.

The gateway learns about a new index generation by polling its manifest (one `stat` per model every
SEARCH_INDEX_POLL_MS) rather than through a PUB/SUB notification: the manifest is the truth either way
(a subscriber has to read it first, since it misses what was published before it joined, and again after
the writer restarts), a stat costs microseconds, and freshness does not depend on it: rows the gateway
computes are searchable at once through the tail. A new generation is opened off the event loop,
memory-mapped (no copy, so opening a 1.5 GB index takes milliseconds), and swapped in as one reference;
a search in flight keeps the object it started with. No index is ever changed after it is opened.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from gateway.database import ReadOnlyDatabase, StoredRow
from gateway.errors import Unavailable
from gateway.search.scope import Scope
from gateway.search.tail import Tail, TailView
from shared.index_manifest import MANIFEST_NAME, IndexManifest, model_index_dir, read_manifest
from shared.protocol import DeletedRow, SearchState
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """A stored string that a search found, with its similarity to the query vector."""

    text: str
    similarity: float


@dataclass(frozen=True)
class Generation:
    """One saved index, opened read-only."""

    manifest: IndexManifest
    index: faiss.Index

    def search(self, vector: np.ndarray, k: int, only: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Ids and scores of up to `k` rows nearest `vector` (with `only`: among those ids), without the -1
        padding an approximate index adds."""
        k = min(k, self.manifest.count)
        if only is None:
            scores, ids = self.index.search(vector.reshape(1, -1), k)
        else:
            scores, ids = self._search_among(vector, k, faiss.IDSelectorBatch(only))
        found = ids[0] >= 0  # an approximate index pads with -1 when its probed lists hold fewer than k
        return ids[0][found], scores[0][found]

    def _search_among(self, vector: np.ndarray, k: int, selector: faiss.IDSelector) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(self.index, faiss.IndexIVF):
            params = faiss.SearchParameters()
            params.sel = selector
            return self.index.search(vector.reshape(1, -1), k, params=params)
        # The probed lists may hold fewer than k of a small scope's rows; then every list is scanned (a
        # selector test per row, distances only for the scope's rows), which finds them all.
        for nprobe in dict.fromkeys((self.index.nprobe, self.index.nlist)):
            ivf_params = faiss.SearchParametersIVF()
            ivf_params.sel = selector
            ivf_params.nprobe = nprobe
            scores, ids = self.index.search(vector.reshape(1, -1), k, params=ivf_params)
            if (ids[0] >= 0).sum() >= k:
                break
        return scores, ids


@dataclass
class ModelSearch:
    """One model's search state: its loaded generation, its tail, and whether both cover every committed row."""

    tail: Tail
    generation: Generation | None = None
    complete: bool = False  # every committed row is in the generation or the tail
    manifest_stamp: tuple[int, int, int] | None = None
    refreshed: bool = False  # the last refresh succeeded for `manifest_stamp`
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # set after the first attempt, even a failed one


@dataclass(frozen=True)
class _Refresh:
    generation: Generation | None
    found_ids: dict[str, int]
    seeded: list[StoredRow] | None


class SearchIndexes:
    """Per served model, the writer's latest saved index and the tail of newer rows, kept fresh by polling."""

    def __init__(self, settings: Settings, models: tuple[str, ...], database: ReadOnlyDatabase) -> None:
        self._root = settings.index_dir
        self._poll_seconds = settings.search_index_poll_ms / 1000
        self._tail_capacity = settings.search_tail_max_rows
        self._nprobe = settings.search_ivf_nprobe
        self._database = database
        self._models = {model: ModelSearch(Tail(self._tail_capacity)) for model in models}
        self._task: asyncio.Task[None] | None = None

    def _state(self, model: str) -> ModelSearch:
        """The search state of `model`, begun (and polled from then on) the first time a model loaded while
        serving is searched or computes a vector."""
        state = self._models.get(model)
        if state is None:
            state = self._models[model] = ModelSearch(Tail(self._tail_capacity))
        return state

    async def start(self) -> None:
        """Start polling the models' manifests every SEARCH_INDEX_POLL_MS."""
        self._task = asyncio.create_task(self._poll(), name="search-index-poll")

    async def stop(self) -> None:
        """Cancel the polling task and wait for it to end."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def rows_computed(self, model: str, texts: list[str], hashes: list[str], vectors: np.ndarray) -> None:
        """EmbeddingService calls this with every vector it has just computed, before returning it."""
        state = self._state(model)
        for text, text_hash, vector in zip(texts, hashes, vectors):
            state.tail.add(text_hash, text, vector)
        if state.tail.overflowed and state.complete:
            log.warning("search tail of %s is full (%d rows): searches answer 503 until the writer saves an index",
                        model, len(state.tail))
            state.complete = False

    def states(self) -> list[SearchState]:
        """Each model's loaded generation, its size and kind, and the tail's size (the gateway's STATUS)."""
        result = []
        for model, state in self._models.items():
            manifest = state.generation.manifest if state.generation else None
            result.append(SearchState(model=model, generation=manifest.generation if manifest else 0,
                                      indexed=manifest.count if manifest else 0, kind=manifest.kind if manifest else "",
                                      tail=len(state.tail), complete=state.complete))
        return result

    async def search(self, model: str, vector: np.ndarray, k: int, exclude_text: str,
                     scope: Scope | None = None) -> list[Hit]:
        """The `k` stored strings of `model` (in `scope` when given) most similar to `vector`, best first,
        without `exclude_text`."""
        state = self._state(model)
        await state.ready.wait()
        if not state.complete:
            raise Unavailable(f"the search index of model {model!r} is not ready yet (the writer is still indexing "
                              "its stored rows); retry shortly")
        return await asyncio.to_thread(self._search, model, state.generation, state.tail.view(),
                                       np.ascontiguousarray(vector, dtype=np.float32), k, exclude_text, scope)

    def rows_deleted(self, rows: list[DeletedRow]) -> None:
        """Forget deleted rows held in the tails (the gateway's deletion feed calls this)."""
        for model, state in self._models.items():
            hashes = {row.text_hash for row in rows if row.model_name == model}
            if hashes:
                state.tail.remove(hashes)

    def _search(self, model: str, generation: Generation | None, tail: TailView, vector: np.ndarray, k: int,
                exclude_text: str, scope: Scope | None) -> list[Hit]:
        # One query uses one thread in FAISS anyway; setting it (per thread, as OpenMP keeps it) keeps idle
        # OpenMP threads from spinning beside concurrent searches.
        faiss.omp_set_num_threads(1)
        members = self._database.members(model, scope) if scope else None
        if members is not None and not len(members.hashes):
            return []
        wanted = k + 1  # room for the query itself, which is left out
        best: dict[str, float] = {}
        if generation is not None and generation.manifest.count:
            # A row deleted since this generation was saved is still in it, but no longer has a text: left out.
            ids, scores = generation.search(vector, wanted, members.ids if members is not None else None)
            texts = self._database.texts([int(i) for i in ids])
            for row_id, score in zip(ids, scores):
                text = texts.get(int(row_id))
                if text is not None:
                    best[text] = float(score)
        for text, score in tail.search(vector, wanted, members.hashes if members is not None else None):
            best[text] = max(score, best.get(text, score))
        best.pop(exclude_text, None)
        ranked = sorted(best.items(), key=lambda item: item[1], reverse=True)[:k]
        return [Hit(text, score) for text, score in ranked]

    async def _poll(self) -> None:
        while True:
            for model in list(self._models):
                try:
                    await self._refresh(model)
                except Unavailable as exc:  # the database is down: expected while it restarts, no traceback
                    log.warning("could not refresh the search index of %s: %s", model, exc.detail)
                except Exception:
                    log.exception("could not refresh the search index of %s; retrying", model)
                finally:
                    self._models[model].ready.set()
            await asyncio.sleep(self._poll_seconds)

    async def _refresh(self, model: str) -> None:
        state = self._models[model]
        directory = model_index_dir(self._root, model)
        stamp = _stamp(directory / MANIFEST_NAME)
        if state.refreshed and stamp == state.manifest_stamp:
            return  # nothing new: an incomplete model waits for the next generation rather than re-reading rows
        refresh = await asyncio.to_thread(self._read, model, directory, state.generation,
                                          state.tail.hashes_without_id(), not state.complete)
        # From here to the end nothing awaits: the swap and the tail's pruning happen together.
        if refresh.generation is not None:
            if refresh.generation is not state.generation:
                # Under load a generation arrives every interval: only the first one is worth an INFO line.
                log.log(logging.INFO if state.generation is None else logging.DEBUG,
                        "search index of %s: generation %d (%d vectors, %s) loaded", model,
                        refresh.generation.manifest.generation, refresh.generation.manifest.count,
                        refresh.generation.manifest.kind)
            state.generation = refresh.generation
        covered = state.generation.manifest.rows_covered if state.generation else 0
        state.tail.drop_covered(refresh.found_ids, covered)
        if refresh.seeded is not None:
            if len(refresh.seeded) > self._tail_capacity:
                state.complete = False
            else:
                state.tail.overflowed = False
                for row in refresh.seeded:
                    state.tail.add(row.text_hash, row.text, row.vector, row.id)
                state.complete = not state.tail.overflowed
        state.manifest_stamp = stamp
        state.refreshed = True

    def _read(self, model: str, directory: Path, current: Generation | None, unidentified: list[str],
              seed: bool) -> _Refresh:
        """Blocking part of a refresh: open a newer generation, look up ids, read rows no index covers."""
        generation = current
        manifest = read_manifest(directory)
        if manifest is not None and (current is None or manifest.file != current.manifest.file):
            index = faiss.read_index(str(directory / manifest.file), faiss.IO_FLAG_MMAP_IFC)
            if isinstance(index, faiss.IndexIVF):
                index.nprobe = manifest.search_nprobe(self._nprobe)  # SEARCH_IVF_NPROBE, else the writer's measured one
            generation = Generation(manifest, index)
        covered = generation.manifest.rows_covered if generation else 0
        found_ids = self._database.row_ids(model, unidentified) if unidentified else {}
        seeded = self._database.rows_after(model, covered, self._tail_capacity + 1) if seed else None
        return _Refresh(generation, found_ids, seeded)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return (status.st_ino, status.st_mtime_ns, status.st_size)

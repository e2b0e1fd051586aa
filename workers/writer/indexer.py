"""The writer's search indexes: one FAISS index per model, built once, extended as rows commit, saved.

It runs in a thread of its own inside the writer process, so that building, extending and saving an index
never delays a commit or its ACK; the writer's loop only tells it which models just committed rows
(`rows_committed`). On start it loads each model's saved index and adds the rows committed since (a restart
does not rebuild from scratch); with no usable saved index it builds one from the database.

Saving is paced: an index is saved when it has changed, at most every SEARCH_INDEX_SAVE_INTERVAL_MS, and
never more often than ten times the last save took, so a large index is not rewritten continuously (at
most ~10% of the time goes to saving). The gateway searches recent rows itself until the next save, so an
index catches up with the committed rows only when its save is due.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Iterable

import faiss

from shared.index_manifest import model_index_dir, read_manifest
from shared.settings import Settings
from workers.writer.index_build import build_index
from workers.writer.index_source import EmbeddingSource
from workers.writer.model_index import IndexPolicy, ModelIndex

log = logging.getLogger(__name__)

# Every known model is checked for rows this often, in case a notification was missed (a step that failed
# is retried then too). Models are learnt from the database at start and from notifications: every write
# path of the writer goes through `_flush`, which notifies.
SWEEP_SECONDS = 5.0
# A save may take at most this share of the indexer's time.
SAVE_TIME_SHARE = 0.1


class Indexer:
    """The writer's indexing thread: keeps each model's FAISS index in step with committed rows, and saves it paced."""

    def __init__(self, settings: Settings) -> None:
        self._database_url = settings.database_url
        self._root = settings.index_dir
        self._policy = IndexPolicy(settings.search_approximate_above, settings.search_ivf_lists,
                                   target_recall=settings.search_target_recall)
        self._save_interval = settings.search_index_save_interval_ms / 1000
        self._threads = settings.search_faiss_threads
        self._notifications: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="indexer", daemon=True)
        self._indexes: dict[str, ModelIndex] = {}
        self._models: set[str] = set()
        self._last_save: dict[str, float] = {}
        self._save_seconds: dict[str, float] = {}

    def start(self) -> None:
        """Start the indexing thread, which first loads or builds the index of every model in the database."""
        self._thread.start()

    def rows_committed(self, models: Iterable[str]) -> None:
        """Called by the writer's loop after a commit; thread-safe and non-blocking."""
        for model in models:
            self._notifications.put(model)

    def stop(self, timeout: float) -> None:
        """Finish the current step, save what changed, and return within `timeout` seconds."""
        self._stopping.set()
        self._notifications.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("indexer still busy after %.0fs at shutdown; its unsaved rows are re-read on start", timeout)

    def _run(self) -> None:
        # OpenMP settings are per thread, so they are set here. Only builds use SEARCH_FAISS_THREADS: a small
        # add gains nothing from more threads and, measured on this busy 2-core machine, a 128-row IVF add took
        # 20 ms with 2 threads (waiting at OpenMP barriers) against 2.3 ms with 1.
        faiss.omp_set_num_threads(1)
        source = EmbeddingSource(self._database_url)
        try:
            self._guarded("every model", self._discover, source)
            next_sweep = time.monotonic()
            behind: set[str] = set()  # models with rows (or deletions) committed since their last catch-up
            while not self._stopping.is_set():
                behind |= self._wait_for_notifications(timeout=self._until_next_step(behind, next_sweep))
                self._models |= behind
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + SWEEP_SECONDS
                    behind |= self._models
                # A model is caught up only when its next save is due: the index need only be current by then
                # (gateways search what they computed through their tails), and catching up commit by commit
                # read the new rows and the deletions log twice as often as the saves needed.
                due = {model for model in behind if time.monotonic() >= self._save_due_at(model)}
                for model in sorted(due):
                    self._guarded(model, self._catch_up, source, model)
                behind -= due
                self._save_due(force=False)
            self._save_due(force=True)
        finally:
            source.close()

    def _wait_for_notifications(self, timeout: float) -> set[str]:
        """The models notified within `timeout` seconds (at least the first, then whatever else is queued)."""
        try:
            first = self._notifications.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return set()
        return {model for model in (first, *self._drain()) if model is not None}

    def _drain(self) -> list[str | None]:
        drained: list[str | None] = []
        while True:
            try:
                drained.append(self._notifications.get_nowait())
            except queue.Empty:
                return drained

    def _guarded(self, model: str, step: Callable[..., object], *args: object) -> None:
        # One model's failure (a full disk, say) must not stop the indexes of the others; the step is
        # tried again at the next notification or sweep.
        try:
            step(*args)
        except Exception:
            log.exception("index for %s: %s failed", model, step.__name__.strip("_"))

    def _discover(self, source: EmbeddingSource) -> None:
        self._models.update(source.models())

    def _catch_up(self, source: EmbeddingSource, model: str) -> None:
        """Bring the model's index up to the last committed row (opening or building it first)."""
        index = self._indexes.get(model) or self._open(source, model)
        if index is None:
            return
        for chunk in source.chunks_after(model, index.rows_covered, index.dimensions):
            index.add(chunk)
        self._remove_deleted(source, index)
        if not self._policy.fits(index):
            log.info("index for %s: %d vectors no longer fit a %s index; rebuilding", model, index.count, index.kind)
            self._build(source, model, generation=index.generation)
        elif self._policy.needs_tuning(index):  # doubled since measured (or never measured): measure nprobe again
            index.tune(self._policy.target_recall)

    def _remove_deleted(self, source: EmbeddingSource, index: ModelIndex) -> None:
        ids, last = source.deleted_after(index.model, index.deletions_covered)
        if last == index.deletions_covered:
            return
        started = time.monotonic()
        removed = index.remove(ids, last)
        log.info("index for %s: removed %d deleted rows of %d vectors in %.3fs", index.model, removed,
                 index.count + removed, time.monotonic() - started)

    def _open(self, source: EmbeddingSource, model: str) -> ModelIndex | None:
        directory = model_index_dir(self._root, model)
        started = time.monotonic()
        saved = ModelIndex.load(model, directory)
        if saved is not None:
            self._remove_deleted(source, saved)  # rows deleted after it was saved
        if saved is not None and self._usable(source, saved):
            log.info("index for %s: loaded generation %d (%d vectors, %s) in %.2fs; adding rows after id %d",
                     model, saved.generation, saved.count, saved.kind, time.monotonic() - started, saved.rows_covered)
            self._indexes[model] = saved
            self._last_save[model] = time.monotonic()
            return saved
        manifest = read_manifest(directory)
        return self._build(source, model, generation=manifest.generation if manifest else 0)

    def _usable(self, source: EmbeddingSource, saved: ModelIndex) -> bool:
        """A saved index is kept when the database still holds exactly the rows it covers."""
        covered_rows = saved.count + source.count_after(saved.model, saved.rows_covered)
        if covered_rows != source.count_after(saved.model, 0):
            log.warning("index for %s: saved generation %d does not match the database; rebuilding",
                        saved.model, saved.generation)
            return False
        if not self._policy.fits(saved):
            log.info("index for %s: saved %s index of %d vectors does not fit the settings; rebuilding",
                     saved.model, saved.kind, saved.count)
            return False
        return True

    def _build(self, source: EmbeddingSource, model: str, generation: int) -> ModelIndex | None:
        started = time.monotonic()
        deletions_seen = source.last_deletion()  # rows deleted before this are not read into the new index
        faiss.omp_set_num_threads(self._threads)
        try:
            index = build_index(source, model, model_index_dir(self._root, model), self._policy, generation,
                                cancelled=self._stopping.is_set)
        finally:
            faiss.omp_set_num_threads(1)
        if index is None:
            if self._stopping.is_set():
                log.info("index for %s: build abandoned at shutdown", model)
            return None
        index.deletions_covered = deletions_seen
        log.info("index for %s: built %s index of %d vectors from the database in %.2fs",
                 model, index.kind, index.count, time.monotonic() - started)
        self._indexes[model] = index
        self._last_save.pop(model, None)  # save the new index at once
        return index

    def _until_next_step(self, behind: set[str], next_sweep: float) -> float:
        """Seconds until the next catch-up or save is due (a model behind, an index changed), or the sweep."""
        due = [self._save_due_at(model) for model in behind]
        due += [self._save_due_at(model) for model, index in self._indexes.items() if index.dirty]
        return max(0.0, min([*due, next_sweep]) - time.monotonic())

    def _save_due_at(self, model: str) -> float:
        if model not in self._last_save:
            return 0.0
        pause = max(self._save_interval, self._save_seconds.get(model, 0.0) / SAVE_TIME_SHARE)
        return self._last_save[model] + pause

    def _save_due(self, force: bool) -> None:
        now = time.monotonic()
        for model, index in self._indexes.items():
            if index.dirty and (force or now >= self._save_due_at(model)):
                self._guarded(model, self._save, model, index)

    def _save(self, model: str, index: ModelIndex) -> None:
        started = time.monotonic()
        try:
            manifest = index.save()
        finally:  # a failed save (a full disk) is tried again an interval later, not at once in a loop
            self._last_save[model] = time.monotonic()
        elapsed = time.monotonic() - started
        self._save_seconds[model] = elapsed
        # Small indexes are saved every interval under load: only slow saves are worth an INFO line.
        log.log(logging.INFO if elapsed >= 1.0 else logging.DEBUG,
                "index for %s: saved generation %d (%d vectors, rows up to id %d) in %.2fs",
                model, manifest.generation, manifest.count, manifest.rows_covered, elapsed)

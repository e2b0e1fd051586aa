"""An indexer of its own, for a gateway host without the writer: the same FAISS indexes, built from PostgreSQL.

The gateway memory-maps the index generations saved under its DATA_DIR. When the writer runs on another host,
this process keeps those files here: the writer's Indexer (indexer.py) fed by polling the shared database for
rows after the last one indexed, every SEARCH_INDEX_POLL_MS, instead of the writer's commit notices. With one
writer the row ids are committed in order, so "rows after the last id" misses nothing, and every gateway host
ends up with indexes of the same rows as the writer's own host (the same results from an exact index; an IVF
index is trained on a random sample, so its approximate answers may differ slightly between hosts).
"""

from __future__ import annotations

import logging
import os

import zmq

from shared.lifecycle import StopFlag
from shared.protocol import Status
from shared.settings import Settings
from shared.status_reporter import StatusReporter
from workers.writer.indexer import Indexer

log = logging.getLogger(__name__)


def run_indexer(settings: Settings, stop: StopFlag, models: tuple[str, ...]) -> None:
    """Keep this host's search indexes of `models` in step with the database until `stop`."""
    indexer = Indexer(settings)
    indexer.start()
    context = zmq.Context()
    reporter = StatusReporter(context, settings.events_address)
    log.info("indexing %s from %s into %s", ", ".join(models), settings.database_label, settings.index_dir)
    try:
        while not stop.wait(settings.search_index_poll_ms / 1000):
            indexer.rows_committed(models)  # the indexer reads what is new, if anything
            reporter.send(Status(role="indexer", pid=os.getpid(), state="ready"))
    finally:
        indexer.stop(timeout=settings.stop_timeout_seconds / 2)
        reporter.close()
        context.term()

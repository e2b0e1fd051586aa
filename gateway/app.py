"""The Starlette application: routes, docs, error handlers, and the lifespan that starts the broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import AsyncIterator

import swagger_ui_bundle
import zmq
import zmq.asyncio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from gateway.auth import TokenAuth
from gateway.broker import Broker
from gateway.cache import MemoryCache
from gateway.database import ReadOnlyDatabase
from gateway.deletion_feed import DeletionFeed
from gateway.documents.jobs.runner import DocumentJobs
from gateway.documents.service import DocumentService
from gateway.embedding_service import EmbeddingService
from gateway.errors import EXCEPTION_HANDLERS
from gateway.metrics import GatewayMetrics
from gateway.model_roster import ModelRoster
from gateway.on_demand import OnDemandLoader
from gateway.openapi import ASSETS_PATH, Endpoint, build_document, docs_endpoints
from gateway.request_metrics import RequestMetrics
from gateway.routes import admin, console, deletion, document_jobs, documents, embeddings, health, openai, similarity, tokenize
from gateway.routes import metrics as metrics_route
from gateway.routes import ramdisk as ramdisk_route
from gateway.search.indexes import SearchIndexes
from gateway.search.searcher import Searcher
from gateway.state import Services
from gateway.stored_hashes import StoredHashes
from gateway.supervisor_view import SupervisorView
from gateway.writer_link import WriterLink
from shared.protocol import Status
from shared.settings import Settings, gateway_worker_address
from shared.status_reporter import StatusReporter

log = logging.getLogger(__name__)
VERSION = "0.1.0"


def all_endpoints() -> list[Endpoint]:
    """Every documented endpoint of the service, in the order the OpenAPI document lists them."""
    return [*embeddings.ENDPOINTS, *documents.ENDPOINTS, *document_jobs.ENDPOINTS, *openai.ENDPOINTS,
            *tokenize.ENDPOINTS, *health.ENDPOINTS, *metrics_route.ENDPOINTS, *ramdisk_route.ENDPOINTS, *similarity.ENDPOINTS,
            *deletion.ENDPOINTS, *admin.ENDPOINTS]


def create_app(settings: Settings, served_models: tuple[str, ...], index: int = 0) -> Starlette:
    """The app of gateway process `index` serving `served_models`; its lifespan builds and starts the services, and
    drains the writer at exit."""
    endpoints = all_endpoints()
    document = build_document(endpoints, "Llama Embeddings Service", VERSION)
    # One registry per app: no process-wide default REGISTRY.
    metrics = GatewayMetrics(settings.run_dir / "metrics", index, settings.gateway_processes)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        context = zmq.asyncio.Context()
        supervisor = SupervisorView(settings, context)
        loader = OnDemandLoader(settings, supervisor, lambda model: broker.has_live_worker(model))
        broker = Broker(settings, context, health=supervisor.health,
                        bind_address=gateway_worker_address(settings.worker_bind_address, index),
                        load_on_demand=loader.load if settings.load_on_demand else None)
        writer = WriterLink(settings, context, index)
        database = ReadOnlyDatabase(settings.database_url)
        roster = ModelRoster(served_models, broker.has_live_worker)
        supervisor.listeners.append(roster.update)
        stored_hashes = StoredHashes(database.hashes_after, settings.search_index_poll_ms / 1000, writer.marks)
        service = EmbeddingService(broker, MemoryCache(settings.gateway_cache_entries), database, writer,
                                   roster, settings.max_text_chars, stored_hashes)
        search = SearchIndexes(settings, served_models, database)
        service.computed_listeners += [search.rows_computed, stored_hashes.rows_computed]
        writer.stored_listeners.append(stored_hashes.rows_stored)
        deletions = DeletionFeed(database, settings.search_index_poll_ms / 1000, writer.marks)
        deletions.listeners += [service.forget, search.rows_deleted]
        writer.stored_listeners.append(deletions.stored)
        documents = DocumentService(settings, service, database, writer, broker)
        app.state.services = Services(settings, broker, database, writer, service,
                                      documents=documents,
                                      jobs=DocumentJobs(settings, documents, index),
                                      search=search,
                                      supervisor=supervisor,
                                      searcher=Searcher(service, search, database),
                                      deletions=deletions)
        app.state.metrics = metrics
        metrics.watch(app.state.services)
        # The supervisor starts this gateway with the writer, not after it, so that their imports overlap (a
        # second of every start): what reads the store below waits for the writer's tables.
        if "writer" in settings.roles and not await database.wait_for_schema(settings.startup_timeout_seconds):
            log.error("the writer has not created the tables after %gs; serving anyway", settings.startup_timeout_seconds)
        await broker.start()
        await writer.start()
        await search.start()
        await deletions.start()
        await stored_hashes.start()
        await supervisor.start()
        await app.state.services.jobs.start()  # last: a resumed job needs the broker and the writer
        status_task = asyncio.create_task(_report_status(settings, app.state.services, metrics))
        log.info("gateway serving models %s on port %d", ", ".join(served_models), settings.listen_port)
        try:
            yield
        finally:
            status_task.cancel()
            await app.state.services.jobs.stop()  # first: a job stopped here is resumed at the next start
            if not await writer.drain(settings.stop_timeout_seconds):
                log.error("writer did not acknowledge %d rows before shutdown", writer.unacknowledged_rows)
            await supervisor.stop()
            await broker.stop()
            await writer.stop()
            await search.stop()
            await deletions.stop()
            await stored_hashes.stop()
            database.close()  # last: search's poll and the handlers above read through it
            context.term()

    routes: list[BaseRoute] = [endpoint.route() for endpoint in endpoints]
    routes += docs_endpoints(document)
    routes += console.ROUTES
    routes.append(Mount(ASSETS_PATH, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger"))
    middleware = [Middleware(RequestMetrics, metrics=metrics, routes=routes)]
    if settings.use_security_token:
        middleware.append(Middleware(TokenAuth, token=settings.security_token))
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS,
                     middleware=middleware)


async def _report_status(settings: Settings, services: Services, metrics: GatewayMetrics) -> None:
    """Tell the supervisor every second that the gateway is up, with its counters and worker registry; leave the
    metrics for the other gateway processes."""
    context = zmq.Context()
    reporter = StatusReporter(context, settings.events_address)
    try:
        while True:
            counters = services.embeddings.counters
            reporter.send(Status(
                role="gateway", pid=os.getpid(), state="ready",
                counters={"cache_hits": counters.cache_hits, "cache_misses": counters.cache_misses,
                          "unacknowledged_rows": services.writer.unacknowledged_rows},
                workers=services.broker.registered_workers(), queues=services.broker.queue_depths(),
                search=services.search.states(),
            ))
            await asyncio.to_thread(metrics.share)
            with contextlib.suppress(TimeoutError):  # every second, and at once when a worker joins or leaves
                await asyncio.wait_for(services.broker.registry_changed.wait(), 1.0)
            services.broker.registry_changed.clear()
    finally:
        reporter.close()
        context.term()

"""What the gateway's handlers share, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gateway.broker import Broker
from gateway.database import ReadOnlyDatabase
from gateway.deletion_feed import DeletionFeed
from gateway.documents.jobs.runner import DocumentJobs
from gateway.documents.service import DocumentService
from gateway.embedding_service import EmbeddingService
from gateway.search.indexes import SearchIndexes
from gateway.search.searcher import Searcher
from gateway.supervisor_view import SupervisorView
from gateway.writer_link import WriterLink
from shared.settings import Settings


@dataclass
class Services:
    """The long-lived objects every handler works with, one of each per app."""

    settings: Settings
    broker: Broker
    database: ReadOnlyDatabase
    writer: WriterLink
    embeddings: EmbeddingService
    documents: DocumentService
    jobs: DocumentJobs
    search: SearchIndexes
    supervisor: SupervisorView
    searcher: Searcher
    deletions: DeletionFeed


def services(request: Request) -> Services:
    """The Services of the app serving `request`."""
    return request.app.state.services

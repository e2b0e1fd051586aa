"""Which processes this host runs: `ROLES` (or `start --roles`), for an instance spread over several hosts.

    host 1: supervisor.py start --roles gateway,writer     (HTTP, the broker, the writer, the search indexes)
    host 2: supervisor.py start --roles workers            (WORKER_CONNECT_ADDRESS=tcp://host-1:5557)
    host 3: PostgreSQL                                     (DATABASE_URL on host 1)
    host 4: supervisor.py start --roles gateway            (more HTTP; WRITER_CONNECT_ADDRESS=tcp://host-1:5560)

A gateway memory-maps the FAISS index files saved under its own DATA_DIR: with the writer on its host, the
writer's; without, an indexer process of its own builds them from the database (workers/writer/index_process.py),
which therefore must be PostgreSQL (a SQLite file lives on one host). A host with workers only has no gateway
to register with locally, so it must be told where the gateways are.
"""

from __future__ import annotations

from shared.curve import is_tcp
from shared.settings import Settings, is_sqlite

ALL_ROLES = ("gateway", "writer", "workers")


class RolesRefused(ValueError):
    """A set of roles this host cannot run as configured; the message says what to change."""


def check_roles(settings: Settings) -> None:
    """Refuse role sets that cannot work, before anything starts."""
    roles = set(settings.roles)
    unknown = roles - set(ALL_ROLES)
    if unknown or not roles:
        raise RolesRefused(f"ROLES={','.join(settings.roles)}: choose from {', '.join(ALL_ROLES)}")
    if ("gateway" in roles) != ("writer" in roles) and is_sqlite(settings.database_url):
        raise RolesRefused("a gateway and a writer on different hosts need a database both reach: set "
                           "DATABASE_URL=postgresql+psycopg://... (SQLite is a file on one host)")
    if roles == {"workers"} and not all(map(is_tcp, settings.worker_connect_addresses)):
        raise RolesRefused("a host with workers only connects to a gateway elsewhere: set "
                           "WORKER_CONNECT_ADDRESS=tcp://gateway-host:port (and CLUSTER_SECRET)")


def runs(settings: Settings, role: str) -> bool:
    """True when this host runs `role`."""
    return role in settings.roles

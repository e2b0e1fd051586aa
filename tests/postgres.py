"""A throw-away PostgreSQL cluster for the tests: Debian's server binaries, a temporary directory, a free port.

As root the server runs as the `postgres` user (PostgreSQL refuses to run as root), through `runuser`; the
cluster lives in a directory of its own under /tmp, since pytest's temporary folders are private to root.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import free_port

_OWNER = "postgres"


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/<version>/bin), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(Path(path).parts[-3]))
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresCluster:
    """One server; `database()` gives each caller a fresh database's URL."""

    bin_dir: Path
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="les-postgres-")))
    host: str = "127.0.0.1"  # where it listens, and the address in the URLs it gives
    launcher: tuple[str, ...] = ()  # `ip netns exec NAME`: the server runs on a test's host of its own
    clients: str = ""  # a network (CIDR) whose clients are trusted besides loopback
    also_listen: str = ""  # more addresses to listen on (comma-separated), for clients on other links
    _databases: int = 0

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", _OWNER, "--", *command]
        command = [*self.launcher, *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> PostgresCluster:
        if os.geteuid() == 0:
            shutil.chown(self.root, _OWNER, _OWNER)
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        if self.clients:
            with (self.data_dir / "pg_hba.conf").open("a") as rules:
                rules.write(f"host all all {self.clients} trust\n")
        self._pg_ctl("start")
        return self

    def _pg_ctl(self, action: str) -> None:
        listen = ",".join(filter(None, [self.host, self.also_listen]))
        options = f"-p {self.port} -k {self.root} -c listen_addresses={listen} -c fsync=off"
        self._run("pg_ctl", action, "-D", str(self.data_dir), "-w", "-t", "60", "-m", "fast",
                  "-l", str(self.root / "server.log"), "-o", options)

    def stop_server(self) -> None:
        """`pg_ctl stop -m fast`: every connection is cut; the data stays."""
        self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-w", "-m", "fast", check=False)

    def start_server(self) -> None:
        """Start the stopped server again on the same port; back when this returns."""
        self._pg_ctl("start")

    def database(self) -> str:
        """A new, empty database, as the DATABASE_URL the service takes."""
        self._databases += 1
        name = f"les_{self._databases}"
        self._run("psql", "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                  "-c", f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{name}"

    def close(self) -> None:
        self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)

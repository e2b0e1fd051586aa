"""Every setting of the service, read in one place.

Values come from the process environment first, then from `config.env`, then the defaults below
(pydantic-settings' order: init arguments, environment, dotenv file, defaults). `_Sources` declares each variable
with its type and default; `load_settings()` resolves them into the frozen `Settings` the processes pass down
(absolute paths, derived addresses). Each process calls it once in its main; nothing else reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasGenerator, BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "config.env"


def is_sqlite(url: str) -> bool:
    """True when `url` names a SQLite database (any sqlite driver); otherwise it is PostgreSQL."""
    return url.startswith("sqlite")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Paths are absolute."""

    data_dir: Path
    models_dir: Path
    database_url: str  # SQLAlchemy URL: sqlite:///<absolute path> or postgresql+psycopg://...
    listen_host: str
    listen_port: int
    default_model_name: str
    default_models: tuple[str, ...]
    models_to_serve: tuple[str, ...]
    roles: tuple[str, ...]  # what this host runs: gateway, writer, workers (supervision/roles.py)
    workers_per_model: int  # 0: "auto", one-thread workers filling the thread budget (supervision/allotment.py)
    worker_threads_total: int
    allow_thread_oversubscription: bool
    worker_bind_address: str  # gateway process 0's; process i binds gateway_worker_address(this, i)
    worker_connect_addresses: tuple[str, ...]  # every gateway process's, in index order: a worker connects to each
    gateway_processes: int
    writer_bind_address: str
    writer_connect_address: str
    cluster_secret: str  # CURVE on tcp sockets between our processes (shared/curve.py); required off loopback
    heartbeat_interval_seconds: float
    heartbeat_liveness: int
    request_timeout_seconds: float
    worker_wait_seconds: float
    max_queue_per_model: int
    worker_credits: int
    batch_token_budget: int
    batch_window_ms: float
    db_write_batch_size: int
    db_flush_interval_ms: float
    db_commit_interval_ms: float
    max_retries: int
    retry_delay_base_seconds: float
    jitter_factor: float
    write_ack_timeout_seconds: float
    gateway_cache_entries: int
    startup_timeout_seconds: float
    stop_timeout_seconds: float
    max_text_chars: int
    max_batch_texts: int
    accept_token_ids: bool  # /v1/embeddings takes token-id inputs (gateway/token_ids.py)
    # security and limits
    use_security_token: bool
    security_token: str
    max_request_body_bytes: int
    # documents
    minimum_string_length_for_document_embedding: int
    max_upload_size_mb: float
    document_chunk_sentences: int
    document_chunks_in_flight: int
    document_job_retention_hours: float  # a finished document job is deleted this long after it finished
    # ramdisk
    use_ramdisk: bool
    ramdisk_path: Path
    ramdisk_size_in_gb: float
    # search
    search_approximate_above: int
    search_ivf_lists: int
    search_ivf_nprobe: int  # 0: the nprobe the writer measured to reach search_target_recall (in the manifest)
    search_target_recall: float
    search_index_save_interval_ms: float
    search_index_poll_ms: float
    search_tail_max_rows: int
    search_faiss_threads: int
    log_level: str
    # portability and healing (workers/embedder/canary.py, supervision/backoff.py)
    weight_repack: Literal["auto", "on", "off"]
    canary_dir: Path  # each model's canary verdicts: how its weights load on this CPU (CANARY_DIR)
    canary_timeout_seconds: float
    restart_backoff_initial_seconds: float
    restart_backoff_max_seconds: float
    restart_backoff_reset_seconds: float
    test_engine_crash: str  # test only: read by workers (canary.crash_requested)
    # operators (supervision/operations.py, gateway/on_demand.py)
    load_on_demand: bool
    load_on_demand_timeout_seconds: float
    model_idle_unload_seconds: float
    memory_reserve_bytes: int

    @property
    def run_dir(self) -> Path:
        """Sockets and pid files of one running instance."""
        return self.data_dir / "run"

    @property
    def database_label(self) -> str:
        """The database for logs and status: its URL without the password."""
        from sqlalchemy.engine import make_url  # here: SQLAlchemy is 0.3 s of every CLI command's start

        return make_url(self.database_url).render_as_string(hide_password=True)

    @property
    def worker_move_seconds(self) -> float:
        """How long moving every worker to other model files may take (a start and a stop): the RAM-disk waits."""
        return self.startup_timeout_seconds + self.stop_timeout_seconds

    @property
    def log_dir(self) -> Path:
        """Each process's log files."""
        return self.data_dir / "logs"

    @property
    def control_address(self) -> str:
        """The supervisor's control socket: commands from the CLI, and the gateway's questions."""
        return f"ipc://{self.run_dir / 'control.sock'}"

    @property
    def events_address(self) -> str:
        """The supervisor's event socket, to which every child pushes its STATUS reports."""
        return f"ipc://{self.run_dir / 'events.sock'}"

    @property
    def scale_state_file(self) -> Path:
        """The worker counts the operator set with `scale`, kept across stop and start."""
        return self.data_dir / "scale.json"

    @property
    def jobs_dir(self) -> Path:
        """Document jobs, one folder each: the upload, its state file and, when done, the answer's zip."""
        return self.data_dir / "jobs"

    @property
    def index_dir(self) -> Path:
        """The writer's saved search indexes, one folder per model."""
        return self.data_dir / "indexes"


def _empty_is_false(value: object) -> object:
    # `USE_RAMDISK=` in a config file means off, as it did with python-decouple.
    return False if isinstance(value, str) and not value.strip() else value


def _count_or_auto(value: object) -> int:
    """0 for "auto" (resolved by a rule of its own), else the count."""
    text = str(value).strip().lower()
    if text in {"auto", "", "0"}:
        return 0
    count = int(text)
    if count < 0:
        raise ValueError(f"must be 'auto' or a positive count, not {value!r}")
    return count


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Flag = Annotated[bool, BeforeValidator(_empty_is_false)]
CountOrAuto = Annotated[int, BeforeValidator(_count_or_auto)]
WeightRepack = Annotated[Literal["auto", "on", "off"], BeforeValidator(_lower)]


class _Sources(BaseSettings):
    """The variables as users set them (names as in config.env), typed; resolved by `load_settings()`."""

    # A variable is its field's name in upper case unless the field names another (the original service's names).
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True,
                                      alias_generator=AliasGenerator(validation_alias=str.upper))

    data_dir: str = "./data"
    models_dir: str = ""
    database_url: str = ""
    listen_host: str = Field("0.0.0.0", validation_alias="LLAMA_EMBEDDING_SERVER_LISTEN_HOST")
    listen_port: int = Field(8089, validation_alias="LLAMA_EMBEDDING_SERVER_LISTEN_PORT")
    default_model_name: str = "all-minilm-l6-v2"
    default_models: str = "all-minilm-l6-v2,smollm2-135m-instruct"
    models_to_serve: str = ""
    roles: str = "gateway,writer,workers"
    workers_per_model: CountOrAuto = 0
    worker_threads_total: int = Field(default_factory=lambda: os.cpu_count() or 1)
    allow_thread_oversubscription: Flag = False
    worker_bind_address: str = ""
    worker_connect_address: str = ""
    gateway_processes: CountOrAuto = 1
    writer_bind_address: str = ""
    writer_connect_address: str = ""
    cluster_secret: str = ""
    heartbeat_interval_seconds: float = 1.0
    heartbeat_liveness: int = 3
    request_timeout_seconds: float = 60.0
    worker_wait_seconds: float = 10.0
    max_queue_per_model: int = 4096
    worker_credits: int = 8
    batch_token_budget: int = 0
    batch_window_ms: float = 0.0
    db_write_batch_size: int = 128
    db_flush_interval_ms: float = 100.0
    db_commit_interval_ms: float = 250.0
    max_retries: int = 10
    retry_delay_base_seconds: float = 0.05
    jitter_factor: float = 0.1
    write_ack_timeout_seconds: float = 2.0
    gateway_cache_entries: int = 50_000
    startup_timeout_seconds: float = 180.0
    stop_timeout_seconds: float = 15.0
    max_text_chars: int = 100_000
    max_batch_texts: int = 2048
    accept_token_ids: Flag = False
    use_security_token: Flag = False
    security_token: str = ""
    max_request_body_mb: float = 16.0
    minimum_string_length_for_document_embedding: int = 15
    max_upload_size_mb: float = 50.0
    document_chunk_sentences: int = 128
    document_chunks_in_flight: int = 2
    document_job_retention_hours: float = 24.0
    use_ramdisk: Flag = False
    ramdisk_path: str = "/mnt/ramdisk"
    ramdisk_size_in_gb: float = 1.0
    search_approximate_above: int = 100_000
    search_ivf_lists: int = 0
    search_ivf_nprobe: CountOrAuto = 0
    search_target_recall: float = 0.95
    search_index_save_interval_ms: float = 1000.0
    search_index_poll_ms: float = 250.0
    search_tail_max_rows: int = 50_000
    search_faiss_threads: int = 1
    log_level: str = "INFO"
    weight_repack: WeightRepack = Field("auto", validation_alias="LLAMA_WEIGHT_REPACK")
    canary_dir: str = ""
    canary_timeout_seconds: float = 120.0
    restart_backoff_initial_seconds: float = 1.0
    restart_backoff_max_seconds: float = 60.0
    restart_backoff_reset_seconds: float = 60.0
    test_engine_crash: str = ""
    load_on_demand: Flag = False
    load_on_demand_timeout_seconds: float = 120.0
    model_idle_unload_seconds: float = 300.0
    memory_reserve_mb: float = 1024.0


def load_settings(config_file: Path | None = None, overrides: dict[str, str] | None = None) -> Settings:
    """Read settings from `overrides`, the environment and `config.env`, in that order of precedence."""
    path = config_file or Path(os.environ.get("LLAMA_EMBEDDINGS_CONFIG", DEFAULT_CONFIG_FILE))
    # Passed as one mapping: the names are the variables' (aliases), checked by pydantic, not by the type checker.
    arguments: dict[str, Any] = {"_env_file": path if path.is_file() else None, **(overrides or {})}
    raw = _Sources(**arguments)
    data_dir = Path(raw.data_dir).expanduser()
    if not data_dir.is_absolute():  # relative to the checkout, so every command finds the same instance
        data_dir = (PROJECT_ROOT / data_dir).resolve()
    models_dir = (PROJECT_ROOT / Path(raw.models_dir or str(data_dir / "models")).expanduser()).resolve()
    worker_bind = raw.worker_bind_address or f"ipc://{data_dir / 'run' / 'workers.sock'}"
    writer_bind = raw.writer_bind_address or f"ipc://{data_dir / 'run' / 'writer.sock'}"
    gateways = raw.gateway_processes or auto_gateway_processes(os.cpu_count() or 1)
    fields = raw.model_dump(exclude={"data_dir", "models_dir", "database_url", "default_models", "models_to_serve", "roles",
                                     "worker_bind_address", "worker_connect_address", "writer_bind_address",
                                     "gateway_processes",
                                     "writer_connect_address", "max_request_body_mb",
                                     "ramdisk_path", "log_level", "memory_reserve_mb", "canary_dir"})
    return Settings(
        **fields,
        data_dir=data_dir,
        models_dir=models_dir,
        database_url=_database_url(raw.database_url or f"sqlite:///{data_dir / 'llama_embeddings.sqlite'}"),
        default_models=_csv(raw.default_models),
        models_to_serve=_csv(raw.models_to_serve),
        roles=_csv(raw.roles),
        worker_bind_address=worker_bind,
        worker_connect_addresses=_gateway_addresses(raw.worker_connect_address or worker_bind.replace("*", "127.0.0.1"),
                                                    gateways),
        gateway_processes=gateways,
        writer_bind_address=writer_bind,
        writer_connect_address=raw.writer_connect_address or writer_bind.replace("*", "127.0.0.1"),
        max_request_body_bytes=int(raw.max_request_body_mb * 1024 * 1024),
        ramdisk_path=(PROJECT_ROOT / Path(raw.ramdisk_path).expanduser()).resolve(),
        canary_dir=(PROJECT_ROOT / Path(raw.canary_dir or str(data_dir / "canary")).expanduser()).resolve(),
        log_level=raw.log_level.upper(),
        memory_reserve_bytes=int(raw.memory_reserve_mb * 1024 * 1024),
    )


def auto_gateway_processes(cores: int) -> int:
    """GATEWAY_PROCESSES=auto: see README "Scale out" for the measurements behind it."""
    return 1 if cores <= 2 else min(4, cores // 4 or 1)


def gateway_worker_address(base: str, index: int) -> str:
    """Where gateway process `index` binds (or is reached) for workers: `base` itself for process 0, then the next
    tcp ports or ipc files (`workers-1.sock`, ...)."""
    if index == 0:
        return base
    if base.startswith("tcp://"):
        host, _, port = base.rpartition(":")
        return f"{host}:{int(port) + index}"
    if base.endswith(".sock"):
        return f"{base[:-len('.sock')]}-{index}.sock"
    return f"{base}-{index}"


def _gateway_addresses(connect: str, gateways: int) -> tuple[str, ...]:
    """WORKER_CONNECT_ADDRESS lists every gateway process's address, or names process 0's (the rest follow it)."""
    listed = _csv(connect)
    if len(listed) == 1:
        return tuple(gateway_worker_address(listed[0], index) for index in range(gateways))
    return listed


def _database_url(database_url: str) -> str:
    """The original service took a SQLAlchemy URL: a SQLite file (relative paths from the checkout), or PostgreSQL
    through psycopg 3 (`postgresql://` and `postgres://` mean that driver too)."""
    for prefix in ("sqlite+aiosqlite:///", "sqlite+pysqlite:///", "sqlite:///"):
        if database_url.startswith(prefix):
            path = Path(database_url[len(prefix):]).expanduser()
            return f"sqlite:///{path if path.is_absolute() else (PROJECT_ROOT / path).resolve()}"
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix):]
    raise ValueError(f"DATABASE_URL must be a sqlite:/// or postgresql+psycopg:// URL, got {database_url!r}")

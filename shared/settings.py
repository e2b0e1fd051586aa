"""Every setting of the service, read in one place.

Values come from the process environment first, then from `config.env` (python-decouple's order), then the
defaults below. Each process calls `load_settings()` once in its main and passes the result down; nothing
else reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from decouple import Config, RepositoryEmpty, RepositoryEnv

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "config.env"


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Paths are absolute."""

    data_dir: Path
    models_dir: Path
    database_path: Path
    listen_host: str
    listen_port: int
    default_model_name: str
    default_models: tuple[str, ...]
    models_to_serve: tuple[str, ...]
    workers_per_model: int  # 0: "auto", one-thread workers filling the thread budget (supervision/allotment.py)
    worker_threads_total: int
    allow_thread_oversubscription: bool
    worker_bind_address: str
    worker_connect_address: str
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
    max_retries: int
    retry_delay_base_seconds: float
    jitter_factor: float
    write_ack_timeout_seconds: float
    gateway_cache_entries: int
    startup_timeout_seconds: float
    stop_timeout_seconds: float
    max_text_chars: int
    max_batch_texts: int
    # security and limits
    use_security_token: bool
    security_token: str
    max_request_body_bytes: int
    # documents
    minimum_string_length_for_document_embedding: int
    max_upload_size_mb: float
    document_chunk_sentences: int
    document_chunks_in_flight: int
    # ramdisk
    use_ramdisk: bool
    ramdisk_path: Path
    ramdisk_size_in_gb: float
    # search
    search_approximate_above: int
    search_ivf_lists: int
    search_ivf_nprobe: int
    search_index_save_interval_ms: float
    search_index_poll_ms: float
    search_tail_max_rows: int
    search_faiss_threads: int
    log_level: str
    # portability and healing (workers/embedder/canary.py, supervision/backoff.py)
    weight_repack: str  # auto, on or off
    canary_timeout_seconds: float
    restart_backoff_initial_seconds: float
    restart_backoff_max_seconds: float
    restart_backoff_reset_seconds: float
    test_engine_crash: str  # test only: read by workers (canary.crash_requested)

    @property
    def run_dir(self) -> Path:
        """Sockets and pid files of one running instance."""
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def control_address(self) -> str:
        return f"ipc://{self.run_dir / 'control.sock'}"

    @property
    def events_address(self) -> str:
        return f"ipc://{self.run_dir / 'events.sock'}"

    @property
    def writer_address(self) -> str:
        return f"ipc://{self.run_dir / 'writer.sock'}"

    @property
    def canary_dir(self) -> Path:
        """Each model's canary verdicts: how its weights load on this CPU."""
        return self.data_dir / "canary"

    @property
    def index_dir(self) -> Path:
        """The writer's saved search indexes, one folder per model."""
        return self.data_dir / "indexes"


def load_settings(config_file: Path | None = None, overrides: dict[str, str] | None = None) -> Settings:
    """Read settings from `overrides`, the environment and `config.env`, in that order of precedence."""
    path = config_file or Path(os.environ.get("LLAMA_EMBEDDINGS_CONFIG", DEFAULT_CONFIG_FILE))
    repository = RepositoryEnv(str(path)) if path.is_file() else RepositoryEmpty()
    config = Config(repository)
    overrides = overrides or {}

    def get(name: str, default: object, cast: Callable[[Any], object] = str) -> object:
        if name in overrides:
            raw: object = overrides[name]
            return raw if cast is str else _cast(raw, cast)
        return config(name, default=default, cast=_bool if cast is bool else cast)

    data_dir = Path(str(get("DATA_DIR", "./data"))).expanduser()
    if not data_dir.is_absolute():  # relative to the checkout, so every command finds the same instance
        data_dir = (PROJECT_ROOT / data_dir).resolve()
    models_dir = (PROJECT_ROOT / Path(str(get("MODELS_DIR", str(data_dir / "models")))).expanduser()).resolve()
    database_url = str(get("DATABASE_URL", f"sqlite:///{data_dir / 'llama_embeddings.sqlite'}"))
    default_models = _csv(str(get("DEFAULT_MODELS", "all-minilm-l6-v2,smollm2-135m-instruct")))
    worker_bind = str(get("WORKER_BIND_ADDRESS", f"ipc://{data_dir / 'run' / 'workers.sock'}"))
    cores = os.cpu_count() or 1
    return Settings(
        data_dir=data_dir,
        models_dir=models_dir,
        database_path=_sqlite_path(database_url),
        listen_host=str(get("LLAMA_EMBEDDING_SERVER_LISTEN_HOST", "0.0.0.0")),
        listen_port=int(get("LLAMA_EMBEDDING_SERVER_LISTEN_PORT", 8089, int)),  # type: ignore[arg-type]
        default_model_name=str(get("DEFAULT_MODEL_NAME", "all-minilm-l6-v2")),
        default_models=default_models,
        models_to_serve=_csv(str(get("MODELS_TO_SERVE", ""))),
        workers_per_model=int(get("WORKERS_PER_MODEL", "auto", _workers)),  # type: ignore[arg-type]
        worker_threads_total=int(get("WORKER_THREADS_TOTAL", cores, int)),  # type: ignore[arg-type]
        allow_thread_oversubscription=bool(get("ALLOW_THREAD_OVERSUBSCRIPTION", False, bool)),
        worker_bind_address=worker_bind,
        worker_connect_address=str(get("WORKER_CONNECT_ADDRESS", worker_bind.replace("*", "127.0.0.1"))),
        heartbeat_interval_seconds=float(get("HEARTBEAT_INTERVAL_SECONDS", 1.0, float)),  # type: ignore[arg-type]
        heartbeat_liveness=int(get("HEARTBEAT_LIVENESS", 3, int)),  # type: ignore[arg-type]
        request_timeout_seconds=float(get("REQUEST_TIMEOUT_SECONDS", 60.0, float)),  # type: ignore[arg-type]
        worker_wait_seconds=float(get("WORKER_WAIT_SECONDS", 10.0, float)),  # type: ignore[arg-type]
        max_queue_per_model=int(get("MAX_QUEUE_PER_MODEL", 4096, int)),  # type: ignore[arg-type]
        worker_credits=int(get("WORKER_CREDITS", 8, int)),  # type: ignore[arg-type]
        batch_token_budget=int(get("BATCH_TOKEN_BUDGET", 0, int)),  # type: ignore[arg-type]
        batch_window_ms=float(get("BATCH_WINDOW_MS", 0.0, float)),  # type: ignore[arg-type]
        db_write_batch_size=int(get("DB_WRITE_BATCH_SIZE", 128, int)),  # type: ignore[arg-type]
        db_flush_interval_ms=float(get("DB_FLUSH_INTERVAL_MS", 100.0, float)),  # type: ignore[arg-type]
        max_retries=int(get("MAX_RETRIES", 10, int)),  # type: ignore[arg-type]
        retry_delay_base_seconds=float(get("RETRY_DELAY_BASE_SECONDS", 0.05, float)),  # type: ignore[arg-type]
        jitter_factor=float(get("JITTER_FACTOR", 0.1, float)),  # type: ignore[arg-type]
        write_ack_timeout_seconds=float(get("WRITE_ACK_TIMEOUT_SECONDS", 2.0, float)),  # type: ignore[arg-type]
        gateway_cache_entries=int(get("GATEWAY_CACHE_ENTRIES", 50_000, int)),  # type: ignore[arg-type]
        startup_timeout_seconds=float(get("STARTUP_TIMEOUT_SECONDS", 180.0, float)),  # type: ignore[arg-type]
        stop_timeout_seconds=float(get("STOP_TIMEOUT_SECONDS", 15.0, float)),  # type: ignore[arg-type]
        max_text_chars=int(get("MAX_TEXT_CHARS", 100_000, int)),  # type: ignore[arg-type]
        max_batch_texts=int(get("MAX_BATCH_TEXTS", 2048, int)),  # type: ignore[arg-type]
        # security and limits
        use_security_token=bool(get("USE_SECURITY_TOKEN", False, bool)),
        security_token=str(get("SECURITY_TOKEN", "")),
        max_request_body_bytes=int(float(get("MAX_REQUEST_BODY_MB", 16.0, float)) * 1024 * 1024),  # type: ignore[arg-type]
        # documents
        minimum_string_length_for_document_embedding=int(
            get("MINIMUM_STRING_LENGTH_FOR_DOCUMENT_EMBEDDING", 15, int)),  # type: ignore[arg-type]
        max_upload_size_mb=float(get("MAX_UPLOAD_SIZE_MB", 50.0, float)),  # type: ignore[arg-type]
        document_chunk_sentences=int(get("DOCUMENT_CHUNK_SENTENCES", 128, int)),  # type: ignore[arg-type]
        document_chunks_in_flight=int(get("DOCUMENT_CHUNKS_IN_FLIGHT", 2, int)),  # type: ignore[arg-type]
        # ramdisk
        use_ramdisk=bool(get("USE_RAMDISK", False, bool)),
        ramdisk_path=(PROJECT_ROOT / Path(str(get("RAMDISK_PATH", "/mnt/ramdisk"))).expanduser()).resolve(),
        ramdisk_size_in_gb=float(get("RAMDISK_SIZE_IN_GB", 1.0, float)),  # type: ignore[arg-type]
        # search
        search_approximate_above=int(get("SEARCH_APPROXIMATE_ABOVE", 100_000, int)),  # type: ignore[arg-type]
        search_ivf_lists=int(get("SEARCH_IVF_LISTS", 0, int)),  # type: ignore[arg-type]
        search_ivf_nprobe=int(get("SEARCH_IVF_NPROBE", 32, int)),  # type: ignore[arg-type]
        search_index_save_interval_ms=float(get("SEARCH_INDEX_SAVE_INTERVAL_MS", 1000.0, float)),  # type: ignore[arg-type]
        search_index_poll_ms=float(get("SEARCH_INDEX_POLL_MS", 250.0, float)),  # type: ignore[arg-type]
        search_tail_max_rows=int(get("SEARCH_TAIL_MAX_ROWS", 50_000, int)),  # type: ignore[arg-type]
        search_faiss_threads=int(get("SEARCH_FAISS_THREADS", 1, int)),  # type: ignore[arg-type]
        log_level=str(get("LOG_LEVEL", "INFO")).upper(),
        weight_repack=str(get("LLAMA_WEIGHT_REPACK", "auto", _weight_repack)),
        canary_timeout_seconds=float(get("CANARY_TIMEOUT_SECONDS", 120.0, float)),  # type: ignore[arg-type]
        restart_backoff_initial_seconds=float(get("RESTART_BACKOFF_INITIAL_SECONDS", 1.0, float)),  # type: ignore[arg-type]
        restart_backoff_max_seconds=float(get("RESTART_BACKOFF_MAX_SECONDS", 60.0, float)),  # type: ignore[arg-type]
        restart_backoff_reset_seconds=float(get("RESTART_BACKOFF_RESET_SECONDS", 60.0, float)),  # type: ignore[arg-type]
        test_engine_crash=str(get("TEST_ENGINE_CRASH", "")),
    )


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _workers(value: object) -> int:
    text = str(value).strip().lower()
    if text in {"auto", "", "0"}:
        return 0
    count = int(text)
    if count < 0:
        raise ValueError(f"WORKERS_PER_MODEL must be 'auto' or a positive count, not {value!r}")
    return count


def _weight_repack(value: object) -> str:
    text = str(value).strip().lower()
    if text not in {"auto", "on", "off"}:
        raise ValueError(f"LLAMA_WEIGHT_REPACK must be auto, on or off, not {value!r}")
    return text


def _cast(raw: object, cast: Callable[[Any], object]) -> object:
    return _bool(raw) if cast is bool else cast(raw)


def _sqlite_path(database_url: str) -> Path:
    """The original service took a SQLAlchemy URL; only SQLite files are supported."""
    for prefix in ("sqlite+aiosqlite:///", "sqlite+pysqlite:///", "sqlite:///"):
        if database_url.startswith(prefix):
            path = Path(database_url[len(prefix):]).expanduser()
            return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()
    raise ValueError(f"DATABASE_URL must be a sqlite URL, got {database_url!r}")

"""Entry point of the gateway process: `python -m gateway --models a,b`.

One gateway process only: its work is I/O, and the worker ROUTER endpoint can be bound by one process.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from gateway.app import create_app
from shared.lifecycle import child_prologue
from shared.logs import configure_logging
from shared.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    """Serve the models named by --models with uvicorn until SIGTERM or SIGINT; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m gateway")
    parser.add_argument("--models", required=True, help="comma-separated names of the models served")
    parser.add_argument("--foreground", action="store_true", help="also log to stdout")
    args = parser.parse_args(argv)
    settings = load_settings()
    child_prologue("llama-embeddings: gateway")
    configure_logging("gateway", settings.log_dir, settings.log_level, to_stdout=args.foreground)
    models = tuple(name for name in args.models.split(",") if name)
    app = create_app(settings, models)
    # uvicorn handles SIGTERM/SIGINT itself: it stops accepting, drains requests, then runs our lifespan exit.
    config = uvicorn.Config(app, host=settings.listen_host, port=settings.listen_port, log_config=None,
                            access_log=False, timeout_graceful_shutdown=int(settings.stop_timeout_seconds))
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Entry point of a gateway process: `python -m gateway --models a,b [--index I --listen-fd FD]`.

With GATEWAY_PROCESSES > 1 the supervisor starts several; they share one listening socket, which the
supervisor opened and passes down (`--listen-fd`): the kernel hands each new connection to whichever gateway
accepts first, and connections waiting to be accepted survive the death of any one gateway (a socket per
process with SO_REUSEPORT would lose the queue of the one killed). Each process binds its own worker socket
(`gateway_worker_address(WORKER_BIND_ADDRESS, index)`), and every worker connects to all of them, rather than
all of them to one broker process between (the ZeroMQ guide's Majordomo): that would put one more hop and one
more single-core process on every request, the very limit several gateways are there to lift.
"""

from __future__ import annotations

import argparse
import gc
import socket
import sys

import uvicorn

from gateway.app import create_app
from gateway.http_protocol import CorkedHttpToolsProtocol
from shared.lifecycle import child_prologue
from shared.logs import configure_logging
from shared.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    """Serve the models named by --models with uvicorn until SIGTERM or SIGINT; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m gateway")
    parser.add_argument("--models", required=True, help="comma-separated names of the models served")
    parser.add_argument("--index", type=int, default=0, help="which of the GATEWAY_PROCESSES this one is")
    parser.add_argument("--listen-fd", type=int, help="an inherited listening socket (else bind the HTTP port)")
    parser.add_argument("--foreground", action="store_true", help="also log to stdout")
    args = parser.parse_args(argv)
    settings = load_settings()
    name = "gateway" if args.index == 0 else f"gateway-{args.index}"
    child_prologue(f"llama-embeddings: {name}")
    configure_logging(name, settings.log_dir, settings.log_level, to_stdout=args.foreground)
    models = tuple(model for model in args.models.split(",") if model)
    app = create_app(settings, models, args.index)
    # uvicorn handles SIGTERM/SIGINT itself: it stops accepting, drains requests, then runs our lifespan exit.
    config = uvicorn.Config(app, host=settings.listen_host, port=settings.listen_port, log_config=None,
                            access_log=False, timeout_graceful_shutdown=int(settings.stop_timeout_seconds),
                            http=CorkedHttpToolsProtocol)
    sockets = [socket.socket(fileno=args.listen_fd)] if args.listen_fd is not None else None
    # Every request allocates a few hundred containers, so the collector ran a young-generation pass every
    # couple of requests and now and then a full one over every module and cached vector: 2.5% of the
    # gateway's CPU under load (perf). What exists now (imports, routes, settings) lives as long as the process:
    # frozen out of every collection; and the young generation is collected every 20,000 allocations, not 700.
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)
    uvicorn.Server(config).run(sockets=sockets)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Entry point of every worker process: `python -m workers embedder ...`, `... writer` or `... indexer`.

The supervisor starts children this way with an explicit environment; settings come from that environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from shared.lifecycle import StopFlag, child_prologue
from shared.logs import configure_logging
from shared.protocol import EXIT_MODEL_UNUSABLE
from shared.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    """Run the role the command line names, one model's embedder or the writer, until stopped; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m workers")
    roles = parser.add_subparsers(dest="role", required=True)
    embedder = roles.add_parser("embedder", help="serve one model")
    embedder.add_argument("--model", required=True)
    embedder.add_argument("--worker-id", type=int, required=True)
    embedder.add_argument("--threads", type=int, required=True)
    embedder.add_argument("--model-path", required=True)
    embedder.add_argument("--foreground", action="store_true", help="also log to stdout")
    writer = roles.add_parser("writer", help="the single database writer")
    writer.add_argument("--foreground", action="store_true")
    indexer = roles.add_parser("indexer", help="search indexes from the database, on a gateway host without the writer")
    indexer.add_argument("--models", required=True)
    indexer.add_argument("--foreground", action="store_true")
    args = parser.parse_args(argv)
    settings = load_settings()
    stop = StopFlag().install()

    if args.role == "indexer":
        child_prologue("llama-embeddings: indexer")
        configure_logging("indexer", settings.log_dir, settings.log_level, to_stdout=args.foreground)
        from workers.writer.index_process import run_indexer

        run_indexer(settings, stop, tuple(model for model in args.models.split(",") if model))
        return 0

    if args.role == "writer":
        child_prologue("llama-embeddings: writer")
        configure_logging("writer", settings.log_dir, settings.log_level, to_stdout=args.foreground)
        from workers.writer.process import run_writer

        run_writer(settings, stop)
        return 0

    child_prologue(f"llama-embeddings: worker {args.model}#{args.worker_id}")
    configure_logging(f"worker-{args.model}-{args.worker_id}", settings.log_dir, settings.log_level,
                      to_stdout=args.foreground)
    from modelstore.catalogue import load_catalogue
    from workers.embedder.canary import choose_engine_config
    from workers.embedder.engine import EngineConfig
    from workers.embedder.io_loop import WorkerIdentity
    from workers.embedder.worker import report_unusable, run_embedder

    entry = load_catalogue(settings.models_dir)[args.model]
    identity = WorkerIdentity(args.model, args.worker_id, os.getpid())
    wanted = EngineConfig(model_path=args.model_path, pooling=entry.pooling, max_tokens=entry.max_tokens,
                          threads=args.threads, token_budget=settings.batch_token_budget or entry.batch_tokens,
                          flash_attention=entry.flash_attention)
    config, failure = choose_engine_config(settings, args.model, wanted)
    if config is None:
        logging.getLogger("workers").error("model %s is not served: %s", args.model, failure)
        report_unusable(settings, identity, failure)
        return EXIT_MODEL_UNUSABLE
    try:
        run_embedder(settings, stop, identity, config)
    except Exception:
        logging.getLogger("workers").exception("worker failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

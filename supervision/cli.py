"""`python supervisor.py COMMAND`: start, stop, status, scale, model management and deletes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from modelstore.catalogue import Catalogue, load_catalogue
from modelstore.download import is_url
from shared.control_client import CommandFailed, NotRunning, is_running, send_command
from shared.curve import OpenBindRefused, check_bind
from shared.lifecycle import StopFlag
from shared.logs import configure_logging
from shared.settings import PROJECT_ROOT, Settings, load_settings
from supervision.allotment import default_workers_per_model
from supervision.children import child_environment, pid_file
from supervision.delete_cli import add_parser as add_delete_parser
from supervision.delete_cli import cmd_delete
from supervision.ramdisk.cli_side import add_parser as add_ramdisk_parser
from supervision.ramdisk.cli_side import check_before_start, cmd_ramdisk, serve_from_ramdisk_at_start
from supervision.roles import RolesRefused, check_roles, runs
from supervision.scale_state import read_scale_state
from supervision.supervisor import Desired, Supervisor

log = logging.getLogger("supervisor")
# How often `start` asks whether the instance is ready: each ask costs the supervisor a status report (a few ms).
_READY_POLL_SECONDS = 0.1


def _desired(settings: Settings, catalogue: Catalogue) -> Desired:
    """Every installed model with its worker count: what the operator last scaled it to (DATA_DIR/scale.json),
    else WORKERS_PER_MODEL for the models served at start (MODELS_TO_SERVE, or every installed one), else 0.

    A host without workers serves the models the workers elsewhere load (MODELS_TO_SERVE, or the default models)
    and needs no model file; its counts are 0 and no worker is started."""
    if not runs(settings, "workers"):
        names = list(settings.models_to_serve or settings.default_models)
        return Desired(workers=dict.fromkeys(names, 0),
                       model_paths={name: str(catalogue[name].installed_path(settings.models_dir)) for name in names})
    installed = [entry.name for entry in catalogue.installed(settings.models_dir)]
    names = list(settings.models_to_serve) or installed
    missing = [name for name in names if not catalogue[name].is_installed(settings.models_dir)]
    if missing:
        raise SystemExit(f"models not installed: {', '.join(missing)} (run `supervisor.py models pull NAME`)")
    if not names:
        raise SystemExit("no model is installed; run `supervisor.py models pull NAME`")
    if settings.default_model_name not in names:
        raise SystemExit(f"DEFAULT_MODEL_NAME {settings.default_model_name!r} is not among the served models {names}")
    per_model = settings.workers_per_model or default_workers_per_model(len(names), settings.worker_threads_total)
    workers = dict.fromkeys(installed, 0) | dict.fromkeys(names, per_model)
    workers |= {model: count for model, count in read_scale_state(settings.scale_state_file).items() if model in workers}
    return Desired(workers=workers,
                   model_paths={name: str(catalogue[name].installed_path(settings.models_dir)) for name in workers})


def _unknown_models(settings: Settings, catalogue: Catalogue) -> str:
    """What names a model no catalogue lists, in the setting that names it ("" when every name is known): a
    typo in MODELS_TO_SERVE must read as one, not as a traceback."""
    problems = []
    for setting, names in (("MODELS_TO_SERVE", settings.models_to_serve), ("DEFAULT_MODELS", settings.default_models)):
        unknown = [name for name in names if name not in catalogue]
        if unknown:
            problems.append(f"{setting} names {', '.join(map(repr, unknown))}, which no catalogue lists")
    if not problems:
        return ""
    return "; ".join(problems) + f" (known models: {', '.join(catalogue.names())}; `supervisor.py models list`)"


def _settings_env(settings: Settings) -> dict[str, str]:
    return {"DATA_DIR": str(settings.data_dir), "MODELS_DIR": str(settings.models_dir),
            "DATABASE_URL": settings.database_url, "ROLES": ",".join(settings.roles)}


def cmd_start(settings: Settings, args: argparse.Namespace) -> int:
    """`start`: check the configuration, start the supervisor detached (or in the foreground) and wait until ready."""
    if settings.use_security_token and not settings.security_token:
        print("USE_SECURITY_TOKEN is on but SECURITY_TOKEN is not set; set it in the environment", file=sys.stderr)
        return 1
    if is_running(settings.control_address):
        print(f"already running for DATA_DIR {settings.data_dir}", file=sys.stderr)
        return 1
    try:
        check_roles(settings)
        if runs(settings, "gateway"):
            check_bind("WORKER_BIND_ADDRESS", settings.worker_bind_address, settings.cluster_secret)
        if runs(settings, "writer"):
            check_bind("WRITER_BIND_ADDRESS", settings.writer_bind_address, settings.cluster_secret)
    except (OpenBindRefused, RolesRefused) as exc:
        print(f"not started: {exc}", file=sys.stderr)
        return 1
    from modelstore.install import ensure_installed

    catalogue = load_catalogue(settings.models_dir)
    unknown = _unknown_models(settings, catalogue)
    if unknown:
        print(f"not started: {unknown}", file=sys.stderr)
        return 1
    if runs(settings, "workers"):
        ensure_installed(settings.default_models, settings.models_dir, catalogue)
        check_before_start(settings, _desired(settings, catalogue))  # fail here, in the user's terminal
    if args.foreground:
        return _run(settings, foreground=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.log_dir / "supervisor.out", "ab") as out:
        process = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "supervisor.py"), "run"],
                                   env=child_environment(dict(os.environ), _settings_env(settings)),
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + settings.startup_timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            print(f"the supervisor exited during start-up; see {settings.log_dir / 'supervisor.out'}", file=sys.stderr)
            return 1
        try:
            status = send_command(settings.control_address, "status", timeout=1.0).data
        except NotRunning:
            time.sleep(_READY_POLL_SECONDS)
            continue
        if status["ready"]:
            where = (f"http://{settings.listen_host}:{settings.listen_port}/" if runs(settings, "gateway")
                     else f"workers registered with {', '.join(settings.worker_connect_addresses)}")
            print(f"ready: {where} (supervisor pid {process.pid})")
            return 0
        time.sleep(_READY_POLL_SECONDS)
    print(f"not ready after STARTUP_TIMEOUT_SECONDS={settings.startup_timeout_seconds:g}; stopping", file=sys.stderr)
    cmd_stop(settings, args)
    return 1


def _run(settings: Settings, foreground: bool) -> int:
    configure_logging("supervisor", settings.log_dir, settings.log_level, to_stdout=foreground)
    desired = serve_from_ramdisk_at_start(settings, _desired(settings, load_catalogue(settings.models_dir)))
    stop = StopFlag().install()
    pid_path = pid_file(settings.run_dir)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    pid_path.write_text(str(os.getpid()))
    env = child_environment(dict(os.environ), _settings_env(settings))
    with open(settings.log_dir / "children.err", "ab") as stderr:
        try:
            Supervisor(settings, desired, env, foreground, stderr=stderr).run(stop)
        finally:
            pid_path.unlink(missing_ok=True)
    log.info("stopped")
    return 0


def cmd_stop(settings: Settings, _args: argparse.Namespace) -> int:
    """`stop`: ask the supervisor to stop and wait for its process to end; 0 also when it was not running."""
    try:
        reply = send_command(settings.control_address, "stop").data
    except NotRunning:
        print(f"not running for DATA_DIR {settings.data_dir}")
        return 0
    pid = int(reply["pid"])
    deadline = time.monotonic() + settings.stop_timeout_seconds * 3 + 5
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    print("stopped")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """`status`: every process of the running instance, as a table or JSON; 3 when none is running."""
    try:
        status = send_command(settings.control_address, "status").data
    except NotRunning as exc:
        print(exc, file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"supervisor pid {status['pid']}  port {status['port']}  data {status['data_dir']}  "
          f"{'ready' if status['ready'] else 'not ready'}")
    header = (f"{'ROLE':8} {'MODEL':24} {'SLOT':>4} {'PID':>7} {'STATE':9} {'RSS MB':>8} {'THREADS':>7} "
              f"{'REQUESTS':>9} {'RESTARTS':>8}  {'LAST EXIT':28} MAPPED FROM")
    print(header)
    for row in status["processes"]:
        slot = row["slot"] if row["role"] == "worker" else "-"
        print(f"{row['role']:8} {row['model'] or '-':24} {slot:>4} {row['pid']:>7} {row['state']:9} "
              f"{row['rss_bytes'] / 2**20:>8.1f} {row['threads'] or '-':>7} {row['requests']:>9} {row['restarts']:>8}  "
              f"{_last_exit(row):28} {row['mapped_from'] or '-'}")
    for row in status["waiting_to_restart"]:
        print(f"{row['slot']}: {row['restarts']} restarts, {_last_exit(row)}; next restart in {row['next_restart_in']:.0f}s")
    for model, reason in status["failed_models"].items():
        print(f"failed model {model}: {reason}")
    if status["scaled"]:
        counts = ", ".join(f"{model} {count}" for model, count in sorted(status["scaled"].items()))
        print(f"scaled by the operator (kept across restarts in {settings.scale_state_file}): {counts}")
    if status["on_demand"]:
        print(f"loaded on demand (unloaded after MODEL_IDLE_UNLOAD_SECONDS idle): {', '.join(status['on_demand'])}")
    return 0


def _last_exit(row: dict[str, Any]) -> str:
    if not row["last_exit"]:
        return "-"
    return f"{row['last_exit']} {row['last_exit_seconds_ago']:.0f}s ago"


def cmd_scale(settings: Settings, args: argparse.Namespace) -> int:
    """`scale MODEL COUNT`: set the number of workers of a model of the running instance."""
    try:
        reply = send_command(settings.control_address, "scale", {"model": args.model, "count": args.count}).data
    except (NotRunning, CommandFailed) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{reply['model']}: {reply['count']} workers, {reply['threads_per_worker']} threads each")
    return 0


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    """`models list|pull|import`: show the catalogue, install a catalogued model, or import a local one."""
    from modelstore import install

    catalogue = load_catalogue(settings.models_dir)
    if args.action == "list":
        print(f"{'NAME':26} {'INSTALLED':9} {'SIZE MB':>9} {'DIMS':>5} {'POOLING':7}  PATH")
        for name in catalogue.names():
            entry = catalogue[name]
            path = entry.installed_path(settings.models_dir)
            size = path.stat().st_size if path.is_file() else entry.size_bytes
            print(f"{name:26} {'yes' if path.is_file() else 'no':9} {size / 2**20:>9.1f} {entry.dimensions:>5} "
                  f"{entry.pooling:7}  {path}")
        return 0
    if args.action == "pull":
        if is_url(args.target):
            entry = install.pull_url(args.target, settings.models_dir, name=args.name)
            print(f"pulled {args.target} as model {entry.name} ({entry.dimensions}-d)")
            return 0
        path = install.install(catalogue[args.target], settings.models_dir)
        print(f"installed {args.target} at {path}")
        return 0
    entry = install.import_folder(Path(args.target), settings.models_dir, name=args.name)
    print(f"imported {entry.name} ({entry.dimensions}-d) at {entry.installed_path(settings.models_dir)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command given on the command line, with the settings from the environment; the exit status."""
    parser = argparse.ArgumentParser(prog="supervisor.py", description="Llama Embeddings Service")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="prepare default models, start every process, wait until ready")
    start.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops everything")
    start.add_argument("--roles", help="what this host runs, of gateway,writer,workers (default: ROLES, all three)")
    commands.add_parser("run", help=argparse.SUPPRESS)
    commands.add_parser("stop", help="stop every process of this instance (DATA_DIR)")
    status = commands.add_parser("status", help="role, model, pid, state, memory and requests of each process")
    status.add_argument("--json", action="store_true")
    scale = commands.add_parser("scale", help="set the number of workers of a model")
    scale.add_argument("model")
    scale.add_argument("count", type=int)
    models = commands.add_parser("models", help="list, pull or import models")
    model_actions = models.add_subparsers(dest="action", required=True)
    model_actions.add_parser("list")
    pull = model_actions.add_parser("pull", help="a catalogue model by name, or a .gguf file by its http(s) URL")
    pull.add_argument("target", metavar="NAME_OR_URL")
    pull.add_argument("--name", help="the model's name, for a URL (default: the file's name)")
    import_ = model_actions.add_parser("import", help="a sentence-transformers folder or a .gguf file")
    import_.add_argument("target", metavar="PATH")
    import_.add_argument("--name")
    add_ramdisk_parser(commands)
    add_delete_parser(commands)
    args = parser.parse_args(argv)
    settings = load_settings()
    if getattr(args, "roles", None):
        settings = dataclasses.replace(settings, roles=tuple(role.strip() for role in args.roles.split(",") if role))
    if args.command == "run":
        return _run(settings, foreground=False)
    handlers = {"start": cmd_start, "stop": cmd_stop, "status": cmd_status, "scale": cmd_scale,
                "models": cmd_models, "delete": cmd_delete,
                "ramdisk": lambda s, a: cmd_ramdisk(s, a, lambda: _desired(s, load_catalogue(s.models_dir)))}
    if args.command == "models":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    return handlers[args.command](settings, args)

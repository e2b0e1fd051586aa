"""The RAM disk in the CLI: what `start` does with USE_RAMDISK, and `supervisor.py ramdisk setup|status|clear`.

Setting up (mounting, copying) runs in the CLI's or the starting supervisor's process, never inside the
running supervisor's loop, which must keep answering and restarting; a running supervisor is only told to
move its workers (see supervisor_side.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from shared.control_client import CommandFailed, NotRunning, clear_ramdisk, ramdisk_action, send_command, wait_for_ramdisk
from shared.protocol import RamdiskState
from shared.settings import Settings
from supervision.ramdisk import operations
from supervision.ramdisk.operations import RamDiskRefused, RamDiskUnavailable
from supervision.ramdisk.tmpfs import TmpfsError
from supervision.supervisor import Desired

log = logging.getLogger("supervisor")


def served_paths(paths: dict[str, str], workers: dict[str, int]) -> dict[str, str]:
    """The files of the models with workers wanted: what goes on the RAM disk (installed models at 0 do not)."""
    return {model: path for model, path in paths.items() if workers.get(model, 0) > 0}


def check_before_start(settings: Settings, desired: Desired) -> None:
    """In the operator's terminal: refuse a size that cannot work; say so if the models will come from disk."""
    if not settings.use_ramdisk:
        return
    try:
        operations.plan(settings, served_paths(desired.model_paths, desired.workers), desired.workers)
    except RamDiskRefused as exc:
        raise SystemExit(f"RAM disk refused: {exc}") from None
    except RamDiskUnavailable as exc:
        print(f"warning: RAM disk not used, models will be served from disk: {exc}", file=sys.stderr)


def serve_from_ramdisk_at_start(settings: Settings, desired: Desired) -> Desired:
    """With USE_RAMDISK, `desired` with its model paths on the RAM disk; on disk after one warning if it cannot be."""
    disk_paths = dict(desired.disk_paths or desired.model_paths)
    if not settings.use_ramdisk:
        return Desired(desired.workers, disk_paths, disk_paths)
    try:
        paths = operations.set_up(settings, served_paths(disk_paths, desired.workers), desired.workers)
    except RamDiskRefused as exc:
        raise SystemExit(f"RAM disk refused: {exc}") from None
    except RamDiskUnavailable as exc:
        log.warning("RAM disk not used, models are served from disk: %s", exc)
        return Desired(desired.workers, disk_paths, disk_paths)
    log.info("workers map their models from the RAM disk at %s", settings.ramdisk_path)
    return Desired(desired.workers, {**disk_paths, **paths}, disk_paths)


def add_parser(commands: Any) -> None:
    """Add `ramdisk setup|status|clear` to the CLI's subcommands."""
    parser = commands.add_parser("ramdisk", help="set up, show or clear the RAM disk the models are served from")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("setup", help="mount the tmpfs, copy the served models in; running workers move onto it")
    status = actions.add_parser("status", help="the mount, its files, and where each worker's model is mapped from")
    status.add_argument("--json", action="store_true")
    actions.add_parser("clear", help="move running workers back to the files on disk, then unmount")


def cmd_ramdisk(settings: Settings, args: argparse.Namespace, desired_now: Callable[[], Desired]) -> int:
    """`ramdisk setup|status|clear`, with or without a running supervisor; the exit status."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.action == "status":
        return _status(settings, args.json)
    if args.action == "setup":
        return _setup(settings, desired_now)
    return _clear(settings)


def _status(settings: Settings, as_json: bool) -> int:
    info = operations.describe(settings)
    service = _ask(settings, "status")
    info["service"] = asdict(service) if service is not None else None
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"RAM disk {'enabled' if info['enabled'] else 'disabled'} (USE_RAMDISK={str(info['enabled']).lower()}) "
          f"at {info['path']}, RAMDISK_SIZE_IN_GB={info['size_in_gb']:g}")
    mount = info["mount"]
    if mount is None:
        print("not mounted")
    else:
        print(f"mounted: {mount['fstype']}, {_mb(mount['size_bytes'])} MB, {_mb(mount['used_bytes'])} MB used, "
              f"{'mounted by this service' if mount['mounted_by_us'] else 'mounted by someone else'}")
        for file in mount["files"]:
            print(f"  {file['name']}  {_mb(file['size_bytes'])} MB")
    print(f"rights to mount: {info['rights'] or 'none: ' + info['rights_reason']}")
    if service is None:
        print("service: not running")
    else:
        if service.clearing:
            print("service: clearing (workers are moving to the files on disk)")
        for line in (service.last_result, service.last_error):
            if line:
                print(f"service: {line}")
        print(f"{'WORKER':28} {'PID':>7}  MAPPED FROM")
        for worker in service.workers:
            where = " (RAM disk)" if Path(worker.mapped_from or "/").is_relative_to(info["path"]) else ""
            print(f"{worker.model + '#' + str(worker.worker_id):28} {worker.pid:>7}  "
                  f"{worker.mapped_from or '(not loaded yet)'}{where}")
    if info["rights"] != "root":
        print("sudoers lines that let this user mount and unmount it (add with `visudo -f /etc/sudoers.d/llama-embeddings`):")
        for line in info["sudoers_lines"]:
            print(f"  {line}")
    return 0


def _setup(settings: Settings, desired_now: Callable[[], Desired]) -> int:
    if not settings.use_ramdisk:
        print("the RAM disk is disabled (USE_RAMDISK=false)", file=sys.stderr)
        return 1
    service = _ask(settings, "status")
    if service is not None:
        disk_paths = service.disk_paths
        workers = send_command(settings.control_address, "status").data["desired"]
    else:
        desired = desired_now()
        disk_paths, workers = desired.model_paths, desired.workers
    try:
        operations.set_up(settings, served_paths(disk_paths, workers), workers)
    except (RamDiskRefused, RamDiskUnavailable) as exc:
        print(f"RAM disk not set up: {exc}", file=sys.stderr)
        return 1
    print(f"the RAM disk at {settings.ramdisk_path} holds {', '.join(sorted(disk_paths))}")
    if service is None:
        print("the service is not running; `start` will serve the models from the RAM disk")
        return 0
    try:
        _ask(settings, "use")
    except CommandFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    if _wait(settings, lambda state: state.settled) is None:
        print("the workers did not all move to the RAM disk within STARTUP_TIMEOUT_SECONDS + STOP_TIMEOUT_SECONDS; "
              "see `supervisor.py ramdisk status`", file=sys.stderr)
        return 1
    print("every worker now maps its model from the RAM disk")
    return 0


def _clear(settings: Settings) -> int:
    try:
        final = clear_ramdisk(settings.control_address, settings.worker_move_seconds)
    except NotRunning:
        try:
            print(operations.clear(settings))  # no service: nothing maps from it
        except (TmpfsError, OSError) as exc:
            print(exc, file=sys.stderr)
            return 1
        return 0
    except CommandFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    if final is None:
        print("the workers did not leave the RAM disk within STARTUP_TIMEOUT_SECONDS + STOP_TIMEOUT_SECONDS; "
              "see `supervisor.py ramdisk status`", file=sys.stderr)
        return 1
    if final.last_error:
        print(final.last_error, file=sys.stderr)
        return 1
    print(final.last_result)
    return 0


def _ask(settings: Settings, action: str) -> RamdiskState | None:
    """The running supervisor's answer to a `ramdisk` action, or None when it is not running."""
    try:
        return ramdisk_action(settings.control_address, action)
    except NotRunning:
        return None


def _wait(settings: Settings, done: Callable[[RamdiskState], bool]) -> RamdiskState | None:
    """The supervisor's RAM disk state once `done`; None after the start and stop timeouts or without a supervisor."""
    try:
        return wait_for_ramdisk(settings.control_address, done, settings.worker_move_seconds)
    except NotRunning:
        return None


def _mb(size: int) -> float:
    return round(size / 2**20, 1)

"""The supervisor's side of the RAM disk: which model file each worker gets, and clearing without failing requests.

Clearing moves the workers back to the on-disk files first, then unmounts. Changing a model's path makes its
workers stale, and the supervisor replaces stale workers rolling (as when the thread allotment changes): new
workers on the disk files start and register, then the old ones finish what they hold and exit. Only when no
child maps anything from the RAM disk any more, nor has been given a path on it, is it unmounted, so umount
never meets a busy file system and no request is lost. `use` is the reverse move, after `ramdisk setup`
copied the models in.

The command runs inside the supervisor's loop, so it only records the wish; `reconcile` finishes the job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.protocol import RamdiskState, RamdiskWorker
from shared.settings import Settings
from supervision.children import Child
from supervision.mappings import mapped_files, maps_under
from supervision.ramdisk import operations, tmpfs
from supervision.ramdisk.tmpfs import TmpfsError

log = logging.getLogger(__name__)


@dataclass
class RamDiskControl:
    """The supervisor's hold on the RAM disk: the model paths new workers get, and a clear until it unmounts."""

    settings: Settings
    model_paths: dict[str, str]  # the paths new workers get: the supervisor's own dict, changed in place
    disk_paths: dict[str, str]  # the installed files
    clearing: bool = False
    last_error: str = ""
    last_result: str = ""

    def command(self, arguments: dict[str, Any], children: list[Child]) -> RamdiskState:
        """`ramdisk` on the control socket: {"action": "status" | "clear" | "use"}."""
        action = str(arguments.get("action", "status"))
        if action == "status":
            return self.state(children)
        if action == "clear":  # allowed when disabled too: it frees a RAM disk an earlier run left mounted
            self.model_paths.update(self.disk_paths)
            self.clearing, self.last_error, self.last_result = True, "", ""
            log.info("clearing the RAM disk: moving workers to the files on disk first")
            self.reconcile(children)
        elif action == "use":
            try:
                self._use_ramdisk()
            except OSError as exc:  # a model file gone from disk: an answer for the operator, not a crash
                raise ValueError(str(exc)) from exc
        else:
            raise ValueError(f"unknown ramdisk action {action!r}; expected status, clear or use")
        return self.state(children)

    def reconcile(self, children: list[Child]) -> None:
        """Called every reconcile round: unmount once nothing of ours uses the RAM disk any more."""
        if not self.clearing or self._in_use(children):
            return
        self.clearing = False
        try:
            self.last_result = operations.clear(self.settings)
            log.info("%s", self.last_result)
        except (TmpfsError, OSError) as exc:
            self.last_error = f"could not clear the RAM disk: {exc}"
            log.error("%s", self.last_error)

    def state(self, children: list[Child]) -> RamdiskState:
        """Where every worker's model comes from now, and what clearing or `use` has done so far."""
        workers = [RamdiskWorker(model=c.spec.model, worker_id=c.spec.worker_id, pid=c.pid, given=c.spec.model_path,
                                 mapped_from=(mapped_files(c.pid) or [""])[0], stopping=c.stopping_since is not None)
                   for c in children if c.spec.role == "worker"]
        # Settled: every worker maps the file its model should be served from now, and nothing is pending.
        settled = not self.clearing and all(not w.stopping and w.mapped_from == self.model_paths[w.model]
                                            for w in workers)
        return RamdiskState(enabled=self.settings.use_ramdisk, path=str(self.settings.ramdisk_path),
                            clearing=self.clearing, settled=settled, last_error=self.last_error,
                            last_result=self.last_result, model_paths=dict(self.model_paths),
                            disk_paths=dict(self.disk_paths), workers=workers)

    def _use_ramdisk(self) -> None:
        if not self.settings.use_ramdisk:
            raise ValueError("the RAM disk is disabled (USE_RAMDISK=false)")
        mount = tmpfs.mount_at(self.settings.ramdisk_path)
        if mount is None or not mount.is_tmpfs:
            raise ValueError(f"no tmpfs is mounted at {self.settings.ramdisk_path}; run `supervisor.py ramdisk setup`")
        copies = operations.ramdisk_paths(self.settings, self.disk_paths)
        for model, copy in copies.items():
            source, target = Path(self.disk_paths[model]), Path(copy)
            if not target.is_file() or target.stat().st_size != source.stat().st_size:
                raise ValueError(f"{model} has no complete copy at {target}; run `supervisor.py ramdisk setup`")
        self.model_paths.update(copies)
        self.clearing, self.last_error = False, ""
        log.info("serving models from the RAM disk at %s: replacing workers rolling", self.settings.ramdisk_path)

    def _in_use(self, children: list[Child]) -> bool:
        root = self.settings.ramdisk_path
        return any(Path(c.spec.model_path).is_relative_to(root) or maps_under(c.pid, root)
                   for c in children if c.process.poll() is None)

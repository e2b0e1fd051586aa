"""A tmpfs at one path: is it mounted, may we mount and unmount it, and the two commands that do.

The service mounts as root, or as a user whom sudo lets run exactly these two commands without a password
(the sudoers lines README 'RAM disk' shows; `supervisor.py ramdisk status` prints them for the current
settings). Both commands are fixed strings, so a sudoers rule can name them whole, with no wildcard.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# sudoers rules name commands by absolute path, so we run the same absolute paths.
_SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MOUNT_TABLE = Path("/proc/self/mounts")
MEBIBYTE = 2**20


class TmpfsError(RuntimeError):
    """A mount or unmount that failed; the message carries the command's own words."""


@dataclass(frozen=True)
class Mount:
    """One line of the mount table."""

    device: str
    path: Path
    fstype: str
    options: str

    @property
    def is_tmpfs(self) -> bool:
        """True when what is mounted there is a tmpfs."""
        return self.fstype == "tmpfs"


@dataclass(frozen=True)
class Rights:
    """How this process may mount: `via` is "root", "sudo", or "" with `reason` saying why not."""

    via: str
    reason: str = ""

    def __bool__(self) -> bool:
        return bool(self.via)


@dataclass(frozen=True)
class Tmpfs:
    """The tmpfs the service wants at `path`, `size_bytes` large, owned by the service's user."""

    path: Path
    size_bytes: int
    uid: int
    gid: int

    @classmethod
    def for_current_user(cls, path: Path, size_in_gb: float) -> Tmpfs:
        """The tmpfs of `size_in_gb` at `path`, owned by this process's effective user and group."""
        return cls(path, size_bytes(size_in_gb), os.geteuid(), os.getegid())

    def mount_command(self) -> list[str]:
        """The mount command line: absolute tool path and fixed options, so that a sudoers rule can name it whole."""
        # mode 0755 and our uid: nobody else may write into the files our workers map.
        options = f"size={self.size_bytes // MEBIBYTE}m,mode=0755,uid={self.uid},gid={self.gid}"
        return [_tool("mount"), "-t", "tmpfs", "-o", options, "tmpfs", str(self.path)]

    def umount_command(self) -> list[str]:
        """The umount command line, by absolute tool path as a sudoers rule names it."""
        return [_tool("umount"), str(self.path)]

    def sudoers_lines(self, user: str) -> list[str]:
        """The sudoers lines that let `user` run exactly the mount and umount commands without a password."""
        return [f"{user} ALL=(root) NOPASSWD: {' '.join(command)}"
                for command in (self.mount_command(), self.umount_command())]


def size_bytes(size_in_gb: float) -> int:
    """RAMDISK_SIZE_IN_GB in bytes, rounded up to whole MiB (the unit the mount option is written in)."""
    return max(1, math.ceil(size_in_gb * 1024)) * MEBIBYTE


def mount_at(path: Path) -> Mount | None:
    """What is mounted exactly at `path` (the topmost mount, if several are stacked), or None."""
    found = None
    for line in MOUNT_TABLE.read_text().splitlines():
        device, mount_point, fstype, options, *_ = line.split()
        if Path(_unescape(mount_point)) == path:
            found = Mount(device, path, fstype, options)
    return found


def mount_rights(tmpfs: Tmpfs) -> Rights:
    """May we mount `tmpfs` and unmount it again?"""
    return _rights([tmpfs.mount_command(), tmpfs.umount_command()])


def umount_rights(tmpfs: Tmpfs) -> Rights:
    """May we unmount `tmpfs`? Clearing needs only this, not the right to mount."""
    return _rights([tmpfs.umount_command()])


def _rights(commands: list[list[str]]) -> Rights:
    if os.geteuid() == 0:
        return Rights("root")
    sudo = shutil.which("sudo", path=_SYSTEM_PATH)
    if sudo is None:
        return Rights("", "not root, and sudo is not installed")
    for command in commands:
        # `sudo -n -l CMD` succeeds only if sudo would run exactly CMD for us without asking anything.
        check = subprocess.run([sudo, "-n", "-l", *command], capture_output=True, text=True)
        if check.returncode != 0:
            return Rights("", f"not root, and `sudo -n` may not run `{' '.join(command)}`")
    return Rights("sudo")


def mount(tmpfs: Tmpfs, rights: Rights) -> None:
    """Mount `tmpfs` as root or through `sudo -n`; TmpfsError with the command's own words if it fails."""
    _run(tmpfs.mount_command(), rights)


def unmount(tmpfs: Tmpfs, rights: Rights) -> None:
    """Unmount `tmpfs` as root or through `sudo -n`; TmpfsError with the command's own words if it fails."""
    _run(tmpfs.umount_command(), rights)


def _run(command: list[str], rights: Rights) -> None:
    if not rights:
        raise TmpfsError(rights.reason)
    argv = [shutil.which("sudo", path=_SYSTEM_PATH) or "sudo", "-n", *command] if rights.via == "sudo" else command
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise TmpfsError(f"`{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()}")


def _tool(name: str) -> str:
    return shutil.which(name, path=_SYSTEM_PATH) or f"/usr/bin/{name}"


def _unescape(field: str) -> str:
    """The mount table writes space, tab, newline and backslash in paths as octal escapes."""
    for escaped, plain in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escaped, plain)
    return field

"""The prologue every child process runs first, and its stop flag.

Children die with their parent (PR_SET_PDEATHSIG), name themselves in `ps`, dump tracebacks on fatal
signals, and turn SIGTERM/SIGINT into a flag: signal handlers never touch sockets or queues.
"""

from __future__ import annotations

import ctypes
import faulthandler
import signal
import threading
from types import FrameType

import setproctitle

_PR_SET_PDEATHSIG = 1


class StopFlag:
    """Set by SIGTERM/SIGINT; main loops poll it or wait on it."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> StopFlag:
        """Make SIGTERM and SIGINT set the flag (call it on the main thread); returns the flag."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        return self

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self._event.set()

    def set(self) -> None:
        """Set the flag without a signal, as a stop asked for from within the process."""
        self._event.set()

    def is_set(self) -> bool:
        """True once a stop has been asked for."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or `timeout` seconds pass; True when it is set."""
        return self._event.wait(timeout)


def child_prologue(title: str) -> None:
    """Name the process, die with the parent, and dump tracebacks on SIGSEGV/SIGABRT."""
    setproctitle.setproctitle(title)
    faulthandler.enable()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the supervisor's stop still reaches us
        pass


def describe_exit(returncode: int) -> str:
    """How a process ended, from its return code: "killed by SIGSEGV" or "exited with code 1"."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"

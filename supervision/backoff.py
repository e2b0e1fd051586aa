"""When a dead process is started again: capped exponential backoff per slot, as Kubernetes' CrashLoopBackOff.

The first restart waits RESTART_BACKOFF_INITIAL_SECONDS, each further death of the same slot doubles the wait up
to RESTART_BACKOFF_MAX_SECONDS, and a process that lived RESTART_BACKOFF_RESET_SECONDS before dying starts a new
streak. It never gives up: a worker that is killed now and then must come back, and one that crashes at once
costs little at one start a minute. (Giving up after 3 deaths in 30 s left a model with no worker for good
after a minute of SIGKILLs under load.) A model that cannot run on this CPU at all is told apart by its
canary (workers/embedder/canary.py), not by counting deaths.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """The restart delays: the first one, the cap, and how long a run must last to start a new streak."""

    initial_seconds: float
    max_seconds: float
    reset_after_seconds: float


@dataclass
class RestartHistory:
    """The deaths of one slot (the writer, the gateway, or worker slot N of a model)."""

    policy: BackoffPolicy
    deaths: int = 0  # in the current streak
    streak_started: float = 0.0
    restarts: int = 0  # every death since the supervisor started, for `status`
    last_exit: str = ""  # "killed by SIGSEGV"
    last_exit_at: float | None = None
    next_start: float = 0.0

    def record_death(self, now: float, lifetime: float, how: str) -> float:
        """Count a death after `lifetime` seconds of running; returns the delay before the next start."""
        if lifetime >= self.policy.reset_after_seconds:
            self.deaths = 0
        if self.deaths == 0:
            self.streak_started = now
        self.deaths += 1
        self.restarts += 1
        self.last_exit, self.last_exit_at = how, now
        delay = min(self.policy.initial_seconds * 2 ** (self.deaths - 1), self.policy.max_seconds)
        self.next_start = now + delay
        return delay

    def may_start(self, now: float) -> bool:
        """True once the delay since the slot's last death has passed."""
        return now >= self.next_start

    def wait_left(self, now: float) -> float | None:
        """Seconds until the slot may start again, or None when it may start now."""
        return self.next_start - now if self.next_start > now else None

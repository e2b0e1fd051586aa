"""Why a model has no live worker, as the supervisor knows it: the words of every 503 and `/ready` reason.

The supervisor builds one `ModelHealth` per served model (its `health` control command); the gateway polls it
and, when a model has no live worker, answers with `no_worker_reason()` instead of a bare "no live worker".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

LOG_HINT = "see logs/supervisor.log"


@dataclass(frozen=True)
class ModelHealth:
    model: str
    desired: int  # workers the operator asked for
    ready: int  # workers serving
    starting: int  # workers alive, loading or running their canary
    failed_reason: str = ""  # set when the model cannot run here; only `scale` tries again
    deaths: int = 0  # worker deaths in the current backoff streak, over all the model's slots
    streak_seconds: float = 0.0  # from the first of those deaths to now
    last_exit: str = ""  # how the last one ended: "killed by SIGSEGV"
    next_restart_in: float | None = None  # the soonest restart of a slot that waits out its backoff

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelHealth:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def answers_at_once(self, worker_wait_seconds: float) -> bool:
        """True when no worker can come within WORKER_WAIT_SECONDS, so a request should not wait for one."""
        if self.failed_reason or self.desired == 0:
            return True
        return self.starting == 0 and self.next_restart_in is not None and self.next_restart_in > worker_wait_seconds

    def retry_after(self) -> int:
        """Seconds for a client's Retry-After: past the next restart when one is scheduled."""
        if self.next_restart_in is not None:
            return max(1, math.ceil(self.next_restart_in) + 1)
        return 2

    def no_worker_reason(self) -> str:
        """One sentence a client or an operator can act on."""
        prefix = _no_live_worker(self.model)
        if self.failed_reason:
            return (f"{prefix}: {self.failed_reason}; after fixing the cause, `supervisor.py scale {self.model} N` "
                    f"tries again ({LOG_HINT})")
        if self.desired == 0:
            return f"{prefix}: it is scaled to 0 workers (`supervisor.py scale {self.model} 1` starts one)"
        if self.deaths:
            if self.deaths == 1:
                history = f"its worker was {self.last_exit} {self.streak_seconds:.0f} s ago"
            else:
                history = f"its worker was {self.last_exit} {self.deaths} times in {self.streak_seconds:.0f} s"
            if self.next_restart_in is not None and not self.starting:
                return f"{prefix}: {history}; next restart in {math.ceil(self.next_restart_in)} s ({LOG_HINT})"
            return f"{prefix}: {history}; a replacement is starting ({LOG_HINT})"
        if self.starting:
            return f"{prefix} yet: its worker is starting (loading the model)"
        return prefix


def no_worker_reason(model: str, health: ModelHealth | None) -> str:
    """Why `model` has no live worker: the supervisor's cause when it told one, else the bare fact."""
    return health.no_worker_reason() if health is not None else _no_live_worker(model)


def _no_live_worker(model: str) -> str:
    return f"model {model!r} has no live worker"

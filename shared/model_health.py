"""Why a model has no live worker, as the supervisor knows it: the words of every 503 and `/ready` reason.

The supervisor builds one `ModelHealth` (shared/protocol.py) per installed model (its `health` control command);
the gateway polls it and, when a model has no live worker, answers with `no_worker_reason()` instead of a bare "no live worker".
"""

from __future__ import annotations

import math

from shared.protocol import ModelHealth

LOG_HINT = "see logs/supervisor.log"


def answers_at_once(health: ModelHealth, worker_wait_seconds: float) -> bool:
    """True when no worker can come within WORKER_WAIT_SECONDS, so a request should not wait for one."""
    if health.failed_reason or health.desired == 0:
        return True
    return health.starting == 0 and health.next_restart_in is not None and health.next_restart_in > worker_wait_seconds


def retry_after(health: ModelHealth) -> int:
    """Seconds for a client's Retry-After: past the next restart when one is scheduled."""
    if health.next_restart_in is not None:
        return max(1, math.ceil(health.next_restart_in) + 1)
    return 2


def _explain(health: ModelHealth) -> str:
    """One sentence a client or an operator can act on."""
    prefix = _no_live_worker(health.model)
    model = health.model
    if health.failed_reason:
        return (f"{prefix}: {health.failed_reason}; after fixing the cause, `supervisor.py scale {model} N` "
                f"tries again ({LOG_HINT})")
    if health.desired == 0:
        return (f"{prefix}: it is installed but not loaded (0 workers); `supervisor.py scale {model} 1` or "
                f"POST /admin/models/{model}/scale loads it, or set LOAD_ON_DEMAND=true to load models on request")
    if health.deaths:
        if health.deaths == 1:
            history = f"its worker was {health.last_exit} {health.streak_seconds:.0f} s ago"
        else:
            history = f"its worker was {health.last_exit} {health.deaths} times in {health.streak_seconds:.0f} s"
        if health.next_restart_in is not None and not health.starting:
            return f"{prefix}: {history}; next restart in {math.ceil(health.next_restart_in)} s ({LOG_HINT})"
        return f"{prefix}: {history}; a replacement is starting ({LOG_HINT})"
    if health.starting:
        return f"{prefix} yet: its worker is starting (loading the model)"
    return prefix


def no_worker_reason(model: str, health: ModelHealth | None) -> str:
    """Why `model` has no live worker: the supervisor's cause when it told one, else the bare fact."""
    return _explain(health) if health is not None else _no_live_worker(model)


def _no_live_worker(model: str) -> str:
    return f"model {model!r} has no live worker"

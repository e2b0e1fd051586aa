"""Models loaded on demand (LOAD_ON_DEMAND): when each was last used, and which have been idle long enough.

A model counts as used while its workers' request counters move (their STATUS reports, once a second); a
worker that restarts starts counting from 0 again, so any change counts, not only a rise. Only models the
supervisor loaded on a request are unloaded when idle: what the operator scaled stays as they set it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Use:
    requests: int  # the model's workers' request counters summed, when last seen
    at: float  # monotonic time the sum last changed (or the model was loaded)


class OnDemandModels:
    """The models loaded on demand and their last use; `idle()` says which to scale back to 0."""

    def __init__(self) -> None:
        self._uses: dict[str, _Use] = {}

    def __contains__(self, model: object) -> bool:
        return model in self._uses

    def names(self) -> list[str]:
        """The models loaded on demand now, sorted."""
        return sorted(self._uses)

    def loaded(self, model: str, now: float) -> None:
        """`model` was loaded for a request at `now`."""
        self._uses[model] = _Use(requests=-1, at=now)

    def forget(self, model: str) -> None:
        """`model` is the operator's again (scaled by hand) or unloaded."""
        self._uses.pop(model, None)

    def idle(self, requests: dict[str, int], now: float, idle_seconds: float) -> list[str]:
        """The models whose request counts (`requests`: the models with a ready worker) have not moved for
        `idle_seconds`; a model still loading (absent from `requests`) is not idle."""
        idle = []
        for model, use in self._uses.items():
            if model not in requests:
                use.at, use.requests = now, -1
                continue
            seen = requests[model]
            if seen != use.requests:
                if use.requests >= 0:  # the first sum after loading is the baseline, not a use
                    use.at = now
                use.requests = seen
            elif idle_seconds > 0 and now - use.at >= idle_seconds:
                idle.append(model)
        return idle

"""Which models the gateway lists and which it accepts, as the supervisor's health report changes.

Listed (the model-name endpoints, /v1/models, /ready) are the models with workers wanted that have had a
worker ready since they were scaled up: a model being loaded appears once it can answer, and one scaled to 0
disappears at once. Accepted are the installed ones besides: a request for a model that is installed but not
loaded is answered from the cache where it can be and otherwise gets a 503 naming the command that loads it
(or loads it, with LOAD_ON_DEMAND); only a name nothing installed is a 422.

On a host whose workers run elsewhere the supervisor reports no models: the roster stays the models the
gateway was started with.
"""

from __future__ import annotations

from typing import Callable

from shared.protocol import ModelHealth


class ModelRoster:
    """The listed and the accepted models; `update()` with every health report the supervisor gives."""

    def __init__(self, started_with: tuple[str, ...], has_live_worker: Callable[[str], bool]) -> None:
        self._listed = set(started_with)
        self._installed = set(started_with)
        self._unloaded: set[str] = set()  # installed with 0 workers wanted, at the last report
        self._has_live_worker = has_live_worker

    def update(self, health: list[ModelHealth]) -> None:
        """Take the supervisor's latest report: every installed model with its wanted and ready workers."""
        if not health:
            return
        self._installed = {report.model for report in health}
        self._unloaded = {report.model for report in health if report.desired == 0}
        for report in health:
            if report.desired == 0:
                self._listed.discard(report.model)
            elif report.ready or self._has_live_worker(report.model):
                self._listed.add(report.model)
        self._listed &= self._installed

    def served(self) -> tuple[str, ...]:
        """The listed models, and those whose first worker registered since the last report, sorted."""
        arrived = {model for model in self._installed - self._listed - self._unloaded if self._has_live_worker(model)}
        return tuple(sorted(self._listed | arrived))

    def installed(self) -> tuple[str, ...]:
        """Every model the gateway accepts requests for, sorted."""
        return tuple(sorted(self._installed | self._listed))

    def accepts(self, model: str) -> bool:
        """True for a listed or installed model; False for a name the gateway knows nothing of."""
        return model in self._listed or model in self._installed

    def unknown_model_message(self, model: str) -> str:
        """The 422's words for a model nothing installed: the served models, and the installed ones not loaded."""
        idle = sorted(self._installed - self._listed)
        also = f" (installed, not loaded: {', '.join(idle)})" if idle else ""
        return f"unknown model {model!r}; available models: {', '.join(self.served())}{also}"

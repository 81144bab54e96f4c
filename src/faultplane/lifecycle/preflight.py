"""The baseline pre-flight: no injection until "fine" is known, in numbers.

An injection is refused (FAILED_PRECONDITION) while its SLO has less baseline history
than required, or when its `min` sits inside the SLO's normal noise.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from faultplane.delivery.plane import FaultPlane
from faultplane.lifecycle.admission import Refused
from faultplane.model.spec import InjectionSpec
from faultplane.slo.baseline import BaselineBook, BaselineStats, baseline_stats, preflight_problem
from faultplane.slo.catalogue import SloDef
from faultplane.slo.sources import PrometheusSource


class Preflight:
    def __init__(
        self,
        catalogue: Mapping[str, SloDef],
        book: BaselineBook,
        plane: FaultPlane,
        prometheus: PrometheusSource | None,
        min_seconds: float,
        window_seconds: float,
        step_seconds: float,
    ) -> None:
        self.catalogue = catalogue
        self.min_seconds = min_seconds
        self.window_seconds = window_seconds
        self._book = book
        self._plane = plane
        self._prometheus = prometheus
        self._step = step_seconds

    async def stats(self, slo_name: str, window_seconds: float | None = None) -> BaselineStats:
        """The SLO's baseline over the window: Prometheus history for Prometheus SLOs
        (it predates this server), the guard's own samples otherwise."""
        slo = self.catalogue[slo_name]
        window = window_seconds or self.window_seconds
        if slo.source == "prometheus" and self._prometheus is not None:
            pods = sorted(s.node_id for s in self._plane.candidates(slo.service))
            history = await self._prometheus.history(slo, pods, window, self._step)
            if not isinstance(history, list):
                raise Refused(
                    f"steady_state.slo: baseline of {slo_name} unreadable: {history.error}"
                )
            return baseline_stats(slo_name, history)
        return baseline_stats(slo_name, self._book.readings(slo_name, window, time.time()))

    async def check(self, spec: InjectionSpec) -> None:
        steady = spec.steady_state
        if steady.slo not in self.catalogue:
            return  # no catalogue configured: nothing to check against
        slo = self.catalogue[steady.slo]
        if steady.compare == "control" and slo.service not in spec.services:
            raise Refused(
                f"steady_state.compare: control mode compares faulted and unfaulted sidecars "
                f"of {', '.join(sorted(spec.services))}, but {slo.name} measures {slo.service}"
            )
        stats = await self.stats(steady.slo)
        problem = preflight_problem(stats, steady.min, self.min_seconds)
        if problem is not None:
            raise Refused(problem)

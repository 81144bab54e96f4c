"""Where SLO values come from: Envoy admin stats (embedded) or Prometheus (PromQL).

Both answer the same question, "the SLO's value over its window for these pods", so a
guard can use either. A value that cannot be determined comes back as a Reading with an
error: the guard treats that as a breach (never fly blind).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from faultplane.slo.catalogue import SloDef
from faultplane.slo.counters import History, parse_listener_stats, slo_value, total

# Every HCM's request counters (`http.<stat prefix>.downstream_rq_*`): faultplane's own
# mesh names its HCMs ingress and egress, Istio inbound_... and outbound_...
STATS_PATH = r"/stats/prometheus?usedonly&filter=%5Ehttp%5C..%2B%5C.downstream_rq_"
READ_TIMEOUT = aiohttp.ClientTimeout(total=2)


@dataclass(frozen=True)
class Reading:
    value: float | None
    error: str = ""
    at: float = field(default_factory=time.time)

    @property
    def readable(self) -> bool:
        return self.value is not None and not self.error


class SloSource(Protocol):
    async def read(self, slo: SloDef, pods: Sequence[str]) -> Reading: ...


class EnvoySource:
    """Samples sidecars' admin stats on every `sample` call and keeps a rolling history.

    One sidecar's trouble is its own: a sidecar whose admin address is unusable, whose page
    cannot be fetched or does not parse is marked unreadable, so reads over it are errors
    (breaches) until it samples cleanly again, while reads over other sidecars go on.
    """

    def __init__(self, keep_seconds: float) -> None:
        self._keep = keep_seconds
        self._histories: dict[tuple[str, str], History] = {}
        self._errors: dict[str, str] = {}
        # pod -> time of its clean sample in the latest round; no entry, no fresh data
        self._sampled: dict[str, float] = {}

    async def sample(
        self,
        session: aiohttp.ClientSession,
        admins: Mapping[str, str],
        broken: Mapping[str, str] | None = None,
    ) -> None:
        """Read every pod's stats once (pod name -> admin address); `broken` names pods
        whose address could not even be built (pod -> why). Never raises for one pod."""
        for pod, why in (broken or {}).items():
            self._errors[pod] = f"{pod}: {why}"
        replies = await _gather_stats(session, list(admins.values()))
        self._sampled = {}  # a pod not sampled now (disconnected) is not read from old data
        for pod, reply in zip(admins, replies, strict=True):
            if isinstance(reply, BaseException):
                self._errors[pod] = f"{pod}: stats unreadable ({type(reply).__name__})"
                continue
            try:
                listeners = parse_listener_stats(reply)
            except Exception as exc:  # whatever the page holds, it is this pod's problem
                self._errors[pod] = f"{pod}: stats unparsable ({describe_error(exc)})"
                continue
            self._errors.pop(pod, None)
            now = self._sampled[pod] = time.monotonic()
            for listener, counters in listeners.items():
                key = (pod, listener)
                history = self._histories.get(key)
                if history is None:
                    history = self._histories[key] = History(self._keep)
                history.add(now, counters)

    def fail(self, why: str) -> None:
        """Sampling failed as a whole (it timed out, or the sidecars could not be listed):
        no pod is fresh this round, and those of the last one say why."""
        for pod in self._sampled:
            self._errors[pod] = f"{pod}: {why}"
        self._sampled = {}

    async def read(self, slo: SloDef, pods: Sequence[str]) -> Reading:
        errors = [self._errors[pod] for pod in pods if pod in self._errors]
        if errors:
            return Reading(None, unreadable_pods(errors))
        increases = []
        for pod in pods:
            if pod not in self._sampled:
                return Reading(None, f"{pod}: not sampled in the latest round")
            # Only prefixes in its latest page: after an Envoy restart, old samples would
            # describe the past, not now.
            histories = [
                history
                for (of, prefix), history in self._histories.items()
                if of == pod
                and stat_prefix_matches(slo, prefix)
                and history.newest_at == self._sampled[pod]
            ]
            if not histories:
                wanted = slo.stat_prefix or slo.listener
                return Reading(None, f"{pod}: no {wanted} stats in its latest sample")
            for history in histories:
                increase = history.increase(slo.window_seconds)
                if increase is None:
                    return Reading(None, f"{pod}: not enough samples yet")
                increases.append(increase[0])
        if not pods:
            return Reading(None, "no sidecars to read")
        value = slo_value(slo, total(increases))
        if value is None:
            return Reading(None, f"no requests in the last {slo.window_seconds:g}s")
        return Reading(value)


def stat_prefix_matches(slo: SloDef, prefix: str) -> bool:
    """Whether an HCM stat prefix counts for the SLO: its `stat_prefix` regex, in full,
    else exactly its listener."""
    if slo.stat_prefix is None:
        return prefix == slo.listener
    return re.fullmatch(slo.stat_prefix, prefix) is not None


def admin_address(port: object) -> str:
    """The loopback admin address from a sidecar's `admin_port` metadata (a Struct number
    arrives as a float); ValueError when it is not a port, so the caller can mark that one
    sidecar unreadable instead of failing the whole sample."""
    whole_float = isinstance(port, float) and port.is_integer()
    if whole_float or (isinstance(port, str) and port.isdecimal()):
        port = int(port)  # type: ignore[arg-type]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"admin_port metadata {port!r:.40} is not a port")
    return f"127.0.0.1:{port}"


def describe_error(exc: BaseException) -> str:
    """An exception as a short reading error: a garbage page can make a long message."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 120 else text[:117] + "..."


async def _gather_stats(
    session: aiohttp.ClientSession, addresses: list[str]
) -> list[str | BaseException]:
    async def one(address: str) -> str:
        async with session.get(f"http://{address}{STATS_PATH}", timeout=READ_TIMEOUT) as reply:
            reply.raise_for_status()
            return await reply.text()

    return await asyncio.gather(*(one(a) for a in addresses), return_exceptions=True)


class HttpClient:
    """The one aiohttp session every SLO read shares, opened by the first read.

    aiohttp binds a session to the running event loop, while the server's parts are built
    before a loop runs them: so the session is opened on first use, not when built.
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class PrometheusSource:
    """Evaluates each SLO as PromQL over the Prometheus HTTP API."""

    def __init__(self, url: str, http: HttpClient) -> None:
        self._url = url.rstrip("/")
        self._http = http

    async def read(self, slo: SloDef, pods: Sequence[str]) -> Reading:
        body = await self._get("query", {"query": promql(slo, pods)})
        if isinstance(body, Reading):
            return body
        try:
            result = body["data"]["result"]
            if not result:
                return Reading(None, f"prometheus: no data for {slo.name}")
            value = float(result[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return Reading(None, f"prometheus: malformed reply ({describe_error(exc)})")
        if math.isnan(value):  # no requests in the window
            return Reading(None, f"no requests in the last {slo.window_seconds:g}s")
        return Reading(value)

    async def history(
        self, slo: SloDef, pods: Sequence[str], seconds: float, step: float
    ) -> list[Reading] | Reading:
        """The SLO's values over the last `seconds` (a range query), or the error."""
        end = time.time()
        params = {
            "query": promql(slo, pods),
            "start": f"{end - seconds:.3f}",
            "end": f"{end:.3f}",
            "step": f"{step:g}",
        }
        body = await self._get("query_range", params)
        if isinstance(body, Reading):
            return body
        try:
            result = body["data"]["result"]
            if not result:
                return []
            return [
                Reading(float(value), at=float(at))
                for at, value in result[0]["values"]
                if not math.isnan(float(value))
            ]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return Reading(None, f"prometheus: malformed reply ({describe_error(exc)})")

    async def _get(self, endpoint: str, params: dict[str, str]) -> dict | Reading:
        try:
            async with self._http.session.get(
                f"{self._url}/api/v1/{endpoint}", params=params, timeout=READ_TIMEOUT
            ) as reply:
                body = await reply.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return Reading(None, f"prometheus unreadable ({type(exc).__name__})")
        if not isinstance(body, dict):
            return Reading(None, f"prometheus: malformed reply ({type(body).__name__})")
        if body.get("status") != "success":
            return Reading(None, f"prometheus: {body.get('error', 'query failed')}")
        return dict(body)


def promql(slo: SloDef, pods: Sequence[str]) -> str:
    """The SLO as PromQL over sidecars scraped with `pod` and `service` labels."""
    # Pod names are DNS labels (validated in the mesh): nothing in them needs escaping
    # in a regex or a PromQL string.
    pod_regex = "|".join(pods)
    window = f"{slo.window_seconds:g}s"
    if slo.query:
        return slo.query.replace("$pods", pod_regex).replace("$window", window)
    match = f'envoy_http_conn_manager_prefix="{slo.listener}",pod=~"{pod_regex}"'
    if slo.kind == "success_ratio":
        five_xx = f'{match},envoy_response_code_class="5"'
        errors = f"sum(increase(envoy_http_downstream_rq_xx{{{five_xx}}}[{window}]))"
        requests = f"sum(increase(envoy_http_downstream_rq_completed{{{match}}}[{window}]))"
        return f"1 - (({errors}) or vector(0)) / {requests}"
    return _latency_share(match, window, slo.threshold_ms or 0.0)


# Envoy's default request-time histogram bounds (ms), as its Prometheus output labels them.
ENVOY_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
                 300000, 600000, 1800000, 3600000)  # fmt: skip


def _latency_share(match: str, window: str, threshold_ms: float) -> str:
    """Share of requests within the threshold, interpolated linearly inside the bucket
    that holds it, exactly as the envoy source does (Prometheus 2.42 has no
    histogram_fraction for classic histograms)."""

    def count(le: float | str) -> str:
        label = le if isinstance(le, str) else (str(int(le)) if float(le).is_integer() else str(le))
        return (
            f'sum(increase(envoy_http_downstream_rq_time_bucket{{{match},le="{label}"}}[{window}]))'
        )

    upper = next((le for le in ENVOY_BUCKETS if le >= threshold_ms), None)
    if upper is None:
        return f"{count(ENVOY_BUCKETS[-1])} / {count('+Inf')}"
    lower = max((le for le in ENVOY_BUCKETS if le < upper), default=0.0)
    fraction = (threshold_ms - lower) / (upper - lower)
    below = count(lower) if lower else "0"
    within = f"({below} + {fraction:g} * ({count(upper)} - {below}))"
    return f"{within} / {count('+Inf')}"


SHOWN_ERRORS = 3


def unreadable_pods(errors: Sequence[str]) -> str:
    """The first few pods' errors and how many more: a reading is kept for the whole
    baseline window every tick, so its text must not grow with the fleet (1,000
    unreadable pods would otherwise make each reading ~50 KB)."""
    shown = "; ".join(errors[:SHOWN_ERRORS])
    more = len(errors) - SHOWN_ERRORS
    return f"{shown}; and {more} more pods" if more > 0 else shown

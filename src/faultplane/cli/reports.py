"""What `faultplane run` leaves behind for a pipeline and for people: JUnit XML, a JSON
history, a Markdown report with a chart of the steady-state readings.

Every report is built from one `Outcome`, which says nothing about the shape of the fault:
the request is carried as the API's message and shown as it is (JSON), so a document with
more fault fields, or several faults, needs no change here. The chart is drawn by
matplotlib (the optional `report` extra); without it the Markdown report is still
written, and says what to install for the chart.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from faultplane.cli.tables import state_name
from faultplane.v1 import faultplane_pb2 as pb

CHART_NEEDS = "the chart needs matplotlib: pip install 'faultplane[report]'"
# A Markdown table of every reading of an hour-long run helps nobody: the first and last
# rows are shown, every breach is in the chart, and the JSON report keeps them all.
TABLE_ROWS = 60


@dataclass(frozen=True)
class Outcome:
    """One experiment as `run` saw it, submission to verdict.

    `verdict` is the server's ("hypothesis held", "hypothesis refuted", "inconclusive:
    ..."), or the runner's own words when there is none ("refused: ...", "detached: ...");
    `reason` is why the injection is in its final state (the abort reason) or why it was
    refused; `readings` are every guard reading seen while following, oldest first (the
    server thins very long histories; what the runner printed is kept here)."""

    experiment: str
    exit_code: int
    verdict: str
    reason: str
    started_at: float
    finished_at: float
    request: pb.InjectionRequest | None = None
    injection: pb.Injection | None = None
    readings: tuple[pb.SloReading, ...] = ()
    log: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    @property
    def refuted(self) -> bool:
        return self.exit_code == 1

    @property
    def title(self) -> str:
        hypothesis = self.request.hypothesis if self.request is not None else ""
        return hypothesis or self.experiment


def to_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def seconds(stamp: Timestamp) -> float:
    return stamp.ToNanoseconds() / 1e9


def utc(stamp: Timestamp) -> str:
    """`12:00:01.250Z`, or `-` for an unset timestamp."""
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime(tzinfo=UTC).strftime("%H:%M:%S.%f")[:-3] + "Z"


# -- JUnit -------------------------------------------------------------------------------


def write_junit(path: Path, outcomes: list[Outcome]) -> None:
    """One testcase per experiment: a refuted hypothesis is a <failure> whose message is
    the abort reason; anything that gave no verdict (inconclusive, failed, refused) is an
    <error>: the experiment could not answer its question."""
    failures = sum(o.refuted for o in outcomes)
    errors = sum(not o.passed and not o.refuted for o in outcomes)
    elapsed = sum(o.finished_at - o.started_at for o in outcomes)
    counts = {"tests": str(len(outcomes)), "failures": str(failures), "errors": str(errors)}
    root = ET.Element("testsuites", name="faultplane", **counts, time=f"{elapsed:.3f}")
    stamp = datetime.fromtimestamp(min((o.started_at for o in outcomes), default=0), UTC)
    suite = ET.SubElement(
        root, "testsuite", name="faultplane run", **counts, skipped="0",
        time=f"{elapsed:.3f}", timestamp=stamp.strftime("%Y-%m-%dT%H:%M:%S"),
    )  # fmt: skip
    for outcome in outcomes:
        case = ET.SubElement(
            suite, "testcase", classname=f"faultplane.run.{Path(outcome.experiment).stem}",
            name=outcome.title, file=outcome.experiment,
            time=f"{outcome.finished_at - outcome.started_at:.3f}",
        )  # fmt: skip
        if outcome.refuted:
            failure = ET.SubElement(case, "failure", message=outcome.reason, type=outcome.verdict)
            failure.text = _case_details(outcome)
        elif not outcome.passed:
            error = ET.SubElement(case, "error", message=outcome.reason, type=outcome.verdict)
            error.text = _case_details(outcome)
        if outcome.log:
            ET.SubElement(case, "system-out").text = "\n".join(outcome.log)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _case_details(outcome: Outcome) -> str:
    injection = outcome.injection
    lines = [f"verdict: {outcome.verdict}", f"reason: {outcome.reason}"]
    if injection is not None:
        lines.insert(0, f"injection {injection.id}: {pb.State.Name(injection.state)}")
    return "\n".join(lines)


# -- JSON --------------------------------------------------------------------------------


def history(outcome: Outcome) -> dict[str, Any]:
    """The whole history as JSON: the injection as the API returns it (transitions with
    every sidecar's evidence), with `readings` replaced by every reading seen."""
    injection = None
    if outcome.injection is not None:
        injection = to_dict(outcome.injection)
        injection["readings"] = [to_dict(r) for r in outcome.readings]
    return {
        "experiment": outcome.experiment,
        "exit_code": outcome.exit_code,
        "verdict": outcome.verdict,
        "reason": outcome.reason,
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "request": to_dict(outcome.request) if outcome.request is not None else None,
        "injection": injection,
        "log": list(outcome.log),
    }


def write_json(path: Path, outcome: Outcome) -> None:
    path.write_text(json.dumps(history(outcome), indent=2) + "\n", encoding="utf-8")


# -- Markdown and chart ------------------------------------------------------------------


def write_markdown(path: Path, outcome: Outcome) -> str | None:
    """The human report; its chart, `<name>.png`, beside it. Returns a note for the
    terminal when the chart could not be drawn (matplotlib missing), else None."""
    chart_path = path.with_suffix(".png")
    note = None
    if outcome.readings:
        try:
            draw_chart(chart_path, outcome)
        except ImportError:
            note = CHART_NEEDS
    chart = chart_path.name if outcome.readings and note is None else None
    path.write_text(markdown(outcome, chart, note), encoding="utf-8")
    return note


def markdown(outcome: Outcome, chart: str | None, note: str | None = None) -> str:
    injection, request = outcome.injection, outcome.request
    lines = [
        f"# Experiment: {outcome.title}",
        "",
        f"**Verdict: {outcome.verdict}** (exit {outcome.exit_code})",
        "",
        f"- Experiment file: `{outcome.experiment}`",
        f"- Reason: {outcome.reason or '-'}",
    ]
    if request is not None:
        steady = request.steady_state
        lines += [
            f"- Hypothesis: {request.hypothesis or '-'}",
            f"- Owner: {request.owner or '-'}",
            f"- Steady state: `{steady.slo}` >= {_minimum(request)}, "
            f"abort after {steady.abort_after:g}s of breach",
            f"- Duration: {request.duration_seconds:g}s",
        ]
    if injection is not None:
        lines += [
            f"- Injection: `{injection.id}`, {pb.State.Name(injection.state)}",
            f"- Active: {utc(injection.activated_at)} to {utc(injection.ended_at)} (UTC)",
            "",
            "## Targets",
            "",
            f"{len(injection.targets)} of {len(injection.matched)} matched sidecars:",
            "",
            *[f"- `{target}`" for target in injection.targets],
            "",
            "## Timeline",
            "",
            *_timeline(injection),
        ]
    lines += ["", "## Steady-state readings", ""]
    lines += _readings_section(outcome, chart, note)
    if request is not None:
        body = json.dumps(to_dict(request), indent=2)
        lines += ["", "## Request", "", "```json", body, "```"]
    return "\n".join(lines) + "\n"


def _minimum(request: pb.InjectionRequest) -> str:
    steady = request.steady_state
    return f"{steady.min:g}" if steady.HasField("min") else "(none)"


def _timeline(injection: pb.Injection) -> list[str]:
    rows = ["| Time (UTC) | Transition | Reason | Sidecar answers |", "|---|---|---|---|"]
    for change in injection.transitions:
        rows.append(
            f"| {utc(change.at)} | {state_name(change.from_state)} -> "
            f"{state_name(change.to_state)} | {_cell(change.reason)} "
            f"| {evidence_summary(change) or '-'} |"
        )
    return rows


def evidence_summary(change: pb.Transition) -> str:
    """`4 rds acked, 1 rtds nacked`: the sidecars' answers to a transition's push."""
    answers = Counter(f"{e.type} {e.outcome}" for e in change.evidence)
    return ", ".join(f"{n} {what}" for what, n in sorted(answers.items()))


def _readings_section(outcome: Outcome, chart: str | None, note: str | None) -> list[str]:
    readings = outcome.readings
    if not readings:
        return ["No readings: the injection was never ACTIVE under the guard."]
    request = outcome.request
    slo = request.steady_state.slo if request is not None else "the SLO"
    minimum = _minimum(request) if request is not None else "-"
    breaches = sum(r.breach for r in readings)
    lines = [
        f"{len(readings)} readings of `{slo}` against min {minimum}, {breaches} in breach.",
        "",
    ]
    if chart is not None:
        lines += [f"![{slo} during the experiment]({chart})", ""]
    elif note:
        lines += [f"_No chart: {note}._", ""]
    start = seconds(readings[0].at)
    rows = ["| Time (UTC) | +s | Value | Min | Breach |", "|---|---|---|---|---|"]
    shown = list(readings)
    if len(shown) > TABLE_ROWS:
        half = TABLE_ROWS // 2
        omitted = len(shown) - TABLE_ROWS
        shown = [*shown[:half], None, *shown[-half:]]  # type: ignore[list-item]
    for reading in shown:
        if reading is None:
            rows.append(f"| ... | | {omitted} more in the JSON report | | |")
            continue
        value = f"{reading.value:.4f}" if reading.HasField("value") else "unreadable"
        if reading.error:
            value += f" ({_cell(reading.error)})"
        breach = f"**for {reading.breach_seconds:.1f}s**" if reading.breach else "no"
        rows.append(
            f"| {utc(reading.at)} | {seconds(reading.at) - start:.1f} | {value} | {minimum} "
            f"| {breach} |"
        )
    return lines + rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def draw_chart(path: Path, outcome: Outcome) -> None:
    """The readings over time against `min`, breaches marked, transitions as vertical
    lines. Raises ImportError without matplotlib (imported here: it is an extra)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    readings, injection = outcome.readings, outcome.injection
    activated = injection is not None and injection.activated_at.seconds > 0
    start = seconds(injection.activated_at) if activated else seconds(readings[0].at)
    figure = Figure(figsize=(8, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    readable = [r for r in readings if r.HasField("value")]
    xs = [seconds(r.at) - start for r in readable]
    axes.plot(xs, [r.value for r in readable], marker=".", label="value")
    control = [r for r in readable if r.HasField("control_value")]
    if control:
        axes.plot(
            [seconds(r.at) - start for r in control],
            [r.control_value for r in control],
            linestyle=":",
            label="control (unfaulted)",
        )
    breached = [r for r in readable if r.breach]
    if breached:
        axes.scatter(
            [seconds(r.at) - start for r in breached],
            [r.value for r in breached],
            color="tab:red",
            zorder=3,
            label="breach",
        )
    request = outcome.request
    if request is not None and request.steady_state.HasField("min"):
        axes.axhline(request.steady_state.min, color="tab:red", linestyle="--", label="min")
    if injection is not None:
        for change in injection.transitions:
            if change.to_state in (pb.PENDING, pb.PENDING_APPROVAL):
                continue  # before the fault: the axis starts at ACTIVE
            at = seconds(change.at) - start
            axes.axvline(at, color="grey", linewidth=0.8)
            axes.annotate(
                pb.State.Name(change.to_state), (at, 1), xycoords=("data", "axes fraction"),
                rotation=90, va="top", ha="right", fontsize=7, color="grey",
            )  # fmt: skip
    slo = request.steady_state.slo if request is not None else "SLO"
    axes.set_title(f"{slo}: {outcome.verdict}")
    axes.set_xlabel("seconds since ACTIVE" if activated else "seconds since the first reading")
    axes.set_ylabel(slo)
    axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")

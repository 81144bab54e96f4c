"""The Chaos Toolkit control that aborts what a run started, however the run ended.

Chaos Toolkit plays rollbacks only when a run completed: a Ctrl-C, a SIGTERM or a failed
method skips them (the default rollback strategy), leaving the fault on until its
deadline. Its controls are called either way: `after_experiment_control` runs once the
run is over, interrupted or not. Declare it in the experiment:

    "controls": [{"name": "faultplane", "provider": {"type": "python",
                  "module": "faultplane.chaostoolkit.control"}}]

and every injection the run's `inject` started that is still live then is aborted, on
the connection it was created on. `cleanup_control`, which Chaos Toolkit calls last in a
`finally`, repeats the sweep in case the after-experiment hook was itself interrupted.
"""

from __future__ import annotations

import logging
from typing import Any

from chaoslib.exceptions import ActivityFailed

from faultplane.chaostoolkit.actions import abort_started

__all__ = ["after_experiment_control", "cleanup_control"]

logger = logging.getLogger("chaostoolkit")
REASON = "Chaos Toolkit run ended"


def after_experiment_control(context: Any, state: Any = None, **kwargs: Any) -> None:
    status = state.get("status", "") if isinstance(state, dict) else ""
    _sweep(f"{REASON} ({status})" if status else REASON)


def cleanup_control() -> None:
    _sweep(REASON)


def _sweep(reason: str) -> None:
    """Abort the leftovers; a failure is logged, not raised: Chaos Toolkit would only
    swallow it, and the next sweep (or the injection's deadline) still stands."""
    try:
        aborted = abort_started(reason)
    except ActivityFailed as exc:
        logger.error(f"faultplane: {exc}")
        return
    if aborted:
        logger.warning(f"faultplane: aborted what this run left live: {', '.join(aborted)}")

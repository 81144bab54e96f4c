"""Let an interruption stop the experiment, not just the activity it lands in.

On SIGTERM Chaos Toolkit raises InterruptExecution in whatever is running, meaning "stop
the run" (its `_run` marks the journal interrupted). But its Python provider turns every
Exception an activity raises into ActivityFailed, InterruptExecution included, so a
SIGTERM that lands in a Python activity fails only that activity: the method carries on,
the hypothesis is checked against a fault still live, and the run reports "completed".
faultplane's activities spend their time waiting on the control plane, so that is where a
SIGTERM lands. `interruptible` re-raises it as the SystemExit(20) Chaos Toolkit uses for
SIGUSR1 ("terminate now, gracefully"), which the provider does not catch: the run ends
interrupted, as after Ctrl-C, and the control aborts what it started.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from chaoslib.exceptions import InterruptExecution

P = ParamSpec("P")
T = TypeVar("T")
GRACEFUL_EXIT = 20  # chaoslib.exit: SystemExit(20) interrupts, rollbacks per strategy

logger = logging.getLogger("chaostoolkit")


def interruptible(activity: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(activity)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return activity(*args, **kwargs)
        except InterruptExecution as exc:
            logger.warning(f"faultplane: {exc}: interrupting the experiment")
            raise SystemExit(GRACEFUL_EXIT) from exc

    return run

"""`--window 'Mon-Fri 10:00-16:00 Asia/Kolkata'`: one of an experiment's windows from the
command line (inject, run), the same as a `windows:` entry of the experiment file. The
server checks days, hours and zone, naming the field."""

from __future__ import annotations

import argparse

from faultplane.v1 import faultplane_pb2 as pb

HELP = (
    "may run only in this window: 'DAYS HH:MM-HH:MM[,HH:MM-HH:MM] ZONE', e.g. "
    "'Mon-Fri 10:00-16:00 Asia/Kolkata' (repeatable: any of them)"
)


def window_flag(text: str) -> pb.ExperimentWindow:
    parts = text.split()
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(
            f"expected 'DAYS HH:MM-HH:MM ZONE', e.g. 'Mon-Fri 10:00-16:00 Asia/Kolkata', "
            f"got {text!r}"
        )
    days, hours, zone = parts
    return pb.ExperimentWindow(weekdays=days, hours=hours.split(","), tz=zone)


def add_window_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--window", action="append", type=window_flag, default=[], metavar="WINDOW", help=HELP
    )

"""`python -m bench.profile FILE [N]`: where a py-spy profile (collapsed stacks, `--format
raw`) spent its samples: the top N functions by own time and by time including callees.

The fan-out scenario writes one per fleet size when `BENCH_PROFILE=1` is set.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def summarise(path: Path, top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_short(frame) for frame in stack.split(";")[1:]]  # [0] is the thread
        if frames:
            own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    lines += ["", "including callees:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`."""
    name, _, where = frame.partition(" (")
    module = where.rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{name} ({module})" if module else name


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 25))

import sys

if sys.argv[1:2] == ["scheduling"]:  # pure simulation, no processes: bench/scheduling/
    from bench.scheduling.main import main as scheduling

    sys.exit(scheduling(sys.argv[2:]))

if sys.argv[1:2] == ["kernel"]:  # the node agent's dead-men (root): bench/kernel.py
    from bench.kernel import main as kernel

    sys.exit(kernel(sys.argv[2:]))

from bench.cli import main

main()

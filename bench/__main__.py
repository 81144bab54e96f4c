import sys

if sys.argv[1:2] == ["scheduling"]:  # pure simulation, no processes: bench/scheduling/
    from bench.scheduling.main import main as scheduling

    sys.exit(scheduling(sys.argv[2:]))

from bench.cli import main

main()

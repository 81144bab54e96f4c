"""`python -m bench.scheduling` (the same as `python -m bench scheduling`)."""

import sys

from bench.scheduling.main import main

sys.exit(main())

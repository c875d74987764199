"""``python -m benchmarks``: see benchmarks/cli.py and README.rst."""

import sys

from benchmarks.cli import main

sys.exit(main())

#!/usr/bin/env python
"""``python benchmarks/run.py ...`` is ``python -m benchmarks ...`` (benchmarks/cli.py), for
whoever runs it by its path."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.cli import main  # noqa: E402 -- the checkout must be importable first

if __name__ == "__main__":
    sys.exit(main())

"""python -m tests.bench: see tests/bench/__init__.py."""

import sys

from tests.bench.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

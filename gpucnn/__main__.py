"""``python -m gpucnn``: the same command line as the ``gpucnn`` console script."""

import sys

from gpucnn.cli import main

if __name__ == "__main__":
    sys.exit(main())

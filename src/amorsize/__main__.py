"""``python -m amorsize``: the command line (see :mod:`amorsize.cli`)."""

import sys

from amorsize.cli import main

if __name__ == "__main__":
    sys.exit(main())

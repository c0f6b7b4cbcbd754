"""``python -m amorsize``."""

import sys

from amorsize.cli import main

sys.exit(main())

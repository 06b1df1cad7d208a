"""``python -m bmslogger``: the same as the ``bmslogger`` command."""

import sys

from bmslogger.cli import main

if __name__ == "__main__":
    sys.exit(main())

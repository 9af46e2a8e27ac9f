"""`python -m dlc`: the `dlc` command line (dlc/cli.py), for when the console script is not on PATH."""

import sys

from dlc.cli import main

sys.exit(main())

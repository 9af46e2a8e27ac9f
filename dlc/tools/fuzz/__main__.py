"""`python -m dlc.tools.fuzz`: see dlc/tools/fuzz/fuzzer.py."""

import sys

from dlc.tools.fuzz.fuzzer import main

sys.exit(main())

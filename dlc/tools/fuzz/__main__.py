"""`python -m dlc.tools.fuzz`: the campaign's command line (campaign.py)."""

import sys

from dlc.tools.fuzz.campaign import main

sys.exit(main())

"""dlc's version (the manifest and the compile cache's key record it)."""

__version__ = "0.1.0"

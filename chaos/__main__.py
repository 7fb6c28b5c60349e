"""``python -m chaos``: the soak behind ``make chaos``."""

from __future__ import annotations

import sys

from chaos.soak import main

if __name__ == "__main__":
    sys.exit(main())

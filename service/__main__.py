"""``python -m service ...``: the same command line as the ``article-classifier`` script."""

from __future__ import annotations

import sys

from service.commands.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m di_tasks``: the ``demo`` and ``graph`` commands (see ``python -m di_tasks --help``)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())

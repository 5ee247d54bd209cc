"""``python main.py --recover [--redis-url URL] [--verbose]`` and the other commands
of ``docrecovery`` (see ``tasks/cli.py``)."""

import sys

from tasks.cli import main

if __name__ == "__main__":
    sys.exit(main())

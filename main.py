"""``python main.py --recover [--redis-url URL] [--verbose]`` and the other commands
of ``docrecovery`` (see ``tasks/cli.py``)."""

import sys

from recovery import ConfigError


def entry() -> int:
    """The CLI, with a bad ``DOCRECOVERY_*`` setting reported as a message: importing
    the pipeline validates its settings, before the CLI's own handlers are in place."""
    try:
        from tasks.cli import main

        return main()
    except ConfigError as exc:
        print(f"docrecovery: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(entry())

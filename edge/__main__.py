"""``python -m edge``: the same entry point as the ``edge`` command."""

from edge.cli import main

main()

"""``python -m authgateway``: the same as the ``authgateway`` command."""

from .commandline import main

main()

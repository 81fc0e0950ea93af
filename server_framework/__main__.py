"""``python -m server_framework``: the command line (see :mod:`server_framework.cli`)."""

from server_framework.cli import main

raise SystemExit(main())

"""``python -m edge_sdk`` is the ``edge-sdk`` command."""

import sys

from edge_sdk.cli.main import main

sys.exit(main())

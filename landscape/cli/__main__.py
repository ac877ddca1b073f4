"""``python -m landscape.cli`` runs the ``landscape`` command."""

import sys

from landscape.cli import main

sys.exit(main())

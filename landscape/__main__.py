"""``python -m landscape`` runs the ``landscape`` command."""

import sys

from landscape.cli import main

sys.exit(main())

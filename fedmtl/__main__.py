"""``python -m fedmtl`` runs the command line."""

import sys

from fedmtl.cli import main

sys.exit(main())

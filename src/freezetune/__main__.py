"""``python -m freezetune`` runs the command line."""

import sys

from freezetune.cli import main

sys.exit(main())

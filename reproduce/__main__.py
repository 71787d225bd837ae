"""`python -m reproduce ...`: see reproduce/cli.py."""

import sys

from reproduce.cli import main

sys.exit(main())

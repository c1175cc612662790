"""``python -m spar_cli``: the ``spar`` command without the installed entry point."""

import sys

from spar_cli.main import main

sys.exit(main())

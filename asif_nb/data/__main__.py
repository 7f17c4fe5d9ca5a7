"""``python -m asif_nb.data``: see ``asif_nb.data.cli``."""
import sys

from .cli import main

sys.exit(main())

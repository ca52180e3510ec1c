"""``python -m h5store.cli``: the ``h5store`` command."""

import sys

from . import main

sys.exit(main())

"""``python -m skucdr.cli``: the ``skucdr`` command."""

import sys

from . import main

sys.exit(main())

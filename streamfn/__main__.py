"""``python -m streamfn``: the same CLI as ``streamfn``."""

import sys

from streamfn.cli import main

sys.exit(main())

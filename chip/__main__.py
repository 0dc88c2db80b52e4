"""`python -m chip ...` (what `accelerate launch -m chip train ...` runs)."""

import sys

from chip.cli import main

sys.exit(main())

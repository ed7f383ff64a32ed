"""``python -m pof`` (and ``torchrun -m pof train ...``)."""

import sys

from .cli import main

sys.exit(main())

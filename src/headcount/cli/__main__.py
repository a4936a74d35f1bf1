"""`python -m headcount.cli ...`, as the `headcount` console script."""

import sys

from headcount.cli import main

sys.exit(main())

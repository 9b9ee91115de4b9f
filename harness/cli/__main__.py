"""`python -m harness.cli`: the `edgebench` console script without its installed wrapper."""

import sys

from harness.cli.main import main

sys.exit(main())

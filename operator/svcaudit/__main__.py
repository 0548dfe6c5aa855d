"""`python -m svcaudit` is the same as the `svcaudit` command."""

import sys

from svcaudit.cli import main

sys.exit(main())

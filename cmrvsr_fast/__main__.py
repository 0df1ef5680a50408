"""`python -m cmrvsr_fast` is the `cmrvsr-fast` command."""

import sys

from cmrvsr_fast.cli import main

sys.exit(main())

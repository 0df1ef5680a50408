"""`python -m cmrvsr_fast` is the `cmrvsr-fast` command."""

import sys

from .cli import main

sys.exit(main())

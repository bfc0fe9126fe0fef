"""`python -m proxy` is `llm-proxy serve` (or any subcommand given)."""

import sys

from proxy.cli import main

sys.exit(main())

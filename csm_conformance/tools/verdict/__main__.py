"""`python -m csm_conformance.verdict ...`: runs cli.main and exits with its code (0 SAFE,
1 REGRESSED, 3 INCONCLUSIVE, 2 bad input). The command itself lives in cli.py, so that importing
the package never imports this module (see cli's docstring)."""

import sys

from csm_conformance.tools.verdict.cli import main

if __name__ == "__main__":
    sys.exit(main())

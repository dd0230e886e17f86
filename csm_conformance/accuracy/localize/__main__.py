"""`python -m csm_conformance.localize ...`: runs the command line of cli.py.

The command itself lives in cli.py so that importing the package (which re-exports `main`) never
imports this module: runpy would warn that `csm_conformance.accuracy.localize.__main__` was already imported.
"""

import sys

from csm_conformance.accuracy.localize.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m csm_conformance.localize`: the documented name of the tool in accuracy/localize/; this entry
module only keeps that name stable (tests/selftest/test_architecture.py checks it stays this thin)."""

import sys

from csm_conformance.accuracy.localize.cli import main

if __name__ == "__main__":
    sys.exit(main())

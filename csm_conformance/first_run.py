"""`python -m csm_conformance.first_run`: the documented name of the tool in tools/first_run.py; this entry
module only keeps that name stable (tests/selftest/test_architecture.py checks it stays this thin)."""

import sys

from csm_conformance.tools.first_run import main

if __name__ == "__main__":
    sys.exit(main())

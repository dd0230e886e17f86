"""`python -m csm_conformance.promote`: the documented name of the tool in tools/promote.py; this entry
module only keeps that name stable (tests/selftest/test_architecture.py checks it stays this thin)."""

import sys

from csm_conformance.tools.promote import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m csm_conformance.stack_range`: the documented name of the tool in tools/stack_range.py; this entry
module only keeps that name stable (tests/selftest/test_architecture.py checks it stays this thin)."""

import sys

from csm_conformance.tools.stack_range import main

if __name__ == "__main__":
    sys.exit(main())

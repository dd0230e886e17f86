"""`python -m csm_conformance.ab.planted`: the documented name of the tool in tools/ab/planted.py; this entry
module only keeps that name stable (tests/selftest/test_architecture.py checks it stays this thin)."""

import sys

from csm_conformance.tools.ab.planted import main

if __name__ == "__main__":
    sys.exit(main())

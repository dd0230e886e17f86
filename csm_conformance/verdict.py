"""`python -m csm_conformance.verdict`: the documented name of the tool in tools/verdict/; this entry
module only keeps that name stable (tests/selftest/test_architecture.py checks it stays this thin)."""

import sys

from csm_conformance.tools.verdict.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m csm_conformance.fault_catalogue`: the documented name of the tool in tools/fault_catalogue/; this entry
module only keeps that name stable (tests/selftest/test_architecture.py checks it stays this thin)."""

import sys

from csm_conformance.tools.fault_catalogue.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m csm_conformance <verb> ...`: the same command as the `csm-conformance` console script
(csm_conformance/tools/cli.py holds the verbs; this entry module stays this thin, see
tests/selftest/test_architecture.py)."""

import sys

from csm_conformance.tools.cli import main

if __name__ == "__main__":
    sys.exit(main())

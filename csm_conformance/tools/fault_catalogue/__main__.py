"""`python -m csm_conformance.fault_catalogue`: the CLI lives in cli.py, so that importing the
package (which re-exports main) never imports this module."""

import sys

from csm_conformance.tools.fault_catalogue.cli import main

if __name__ == "__main__":
    sys.exit(main())

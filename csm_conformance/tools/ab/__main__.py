"""`python -m csm_conformance.tools.ab`: runs cli.main (the documented name, `python -m
csm_conformance.ab`, is the entry package at the top). The command lives in cli.py so that
importing it never imports this module."""

import sys

from csm_conformance.tools.ab.cli import main

if __name__ == "__main__":
    sys.exit(main())

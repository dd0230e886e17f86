#!/usr/bin/env python3
"""The seed's performance command: `pytest -m performance` on the conformance suite, extra arguments passed
to pytest; names the reports it wrote (docs/seed-commands.md)."""

from __future__ import annotations

import sys

from csm_conformance.tools import inference as cli

if __name__ == "__main__":
    run = cli.SuiteRun("performance", sys.argv[1:], "eval_performance.py")
    sys.exit(run.finish(run.command()()))  # called here, at the `pytest` command's own call depth

#!/usr/bin/env python3
"""The seed's inference command: speak --text with CSM into a WAV file, or run a part of the suite
(--benchmark, --accuracy, --all). `python inference.py --help`; docs/seed-commands.md."""

from __future__ import annotations

import sys

from csm_conformance.tools import inference as cli

if __name__ == "__main__":
    outcome = cli.inference()
    if isinstance(outcome, cli.SuiteRun):  # called here, at the `pytest` command's own call depth
        outcome = outcome.finish(outcome.command()())
    sys.exit(outcome)

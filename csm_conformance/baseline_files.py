"""Reading a stored baseline file (accuracy bounds, performance figures, golden outputs), with a
one-line error when it is damaged.

Why here, at the foundation beside errors.py: both gates store baselines and neither may import
the other (tests/selftest/test_architecture.py checks the layers), so what they share lives below
both.
"""

from __future__ import annotations

import json
from pathlib import Path

from csm_conformance.errors import UserError


class BaselineError(UserError, ValueError):
    """A stored baseline or golden file cannot be used; the message is one line."""


def read_baseline_json(path: Path, corrupt: str) -> object | None:
    """A stored baseline's JSON; None when the file is absent; BaselineError(`corrupt`, formatted
    with {path} and {exc}) when it cannot be parsed."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BaselineError(corrupt.format(path=path, exc=exc)) from None

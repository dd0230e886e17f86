"""The written schema of the suite's two JSON reports, and the one check every reader runs.

Why: the accuracy report and the performance report's `csm` block are read by several tools (the
verdict, promote, first_run, stack_range), on reports written by other releases of this suite.
Without a schema each reader guessed at the fields it needed and failed, if at all, with a
KeyError deep inside. The schemas are JSON Schema files (csm_conformance/reports/schemas/, package data)
that a user's own tools can read too; each report names its version (`report_schema`).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import jsonschema

from csm_conformance.errors import UserError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
VERSIONS = {"accuracy": "csm-conformance/accuracy/1", "performance": "csm-conformance/performance/1", "ops": "csm-conformance/ops/1",
            "attribution": "csm-conformance/attribution/1"}
FILES = {"accuracy": "accuracy-1.schema.json", "performance": "performance-1.schema.json", "ops": "ops-1.schema.json",
         "attribution": "attribution-1.schema.json"}


class ReportSchemaError(UserError, ValueError):
    """A report does not follow its schema; the message is one line."""


@cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / FILES[kind]).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate(document: object, kind: str, source: str) -> None:
    """Raise ReportSchemaError naming the first problem: where it is, and what was expected."""
    if isinstance(document, dict) and document.get("report_schema") not in (None, VERSIONS[kind]):
        raise ReportSchemaError(f"{source}: report schema {document['report_schema']!r}, this suite reads {VERSIONS[kind]!r}")
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ReportSchemaError(f"{source}: not a {VERSIONS[kind]} report: at {where}: {error.message[:200]}")

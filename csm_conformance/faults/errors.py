"""The two exceptions of the planted faults, apart so that every fault module can raise them.

Both keep `csm_conformance.faults` as their module, the name failure text and tracebacks have
always shown (a test's failure line reads `csm_conformance.faults.PlantedFaultError: ...`); the
package re-exports them there.
"""

from __future__ import annotations

from csm_conformance.errors import UserError


class FaultError(UserError, ValueError):
    """The fault spec cannot be applied; the message is one line."""

    __module__ = "csm_conformance.faults"


class PlantedFaultError(RuntimeError):
    """Raised by the `raise:<frame>` fault, so a report can tell it from a real crash."""

    __module__ = "csm_conformance.faults"

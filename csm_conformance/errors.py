"""The one base class of the errors a user can fix: a missing model path, an unavailable device,
an unknown case, a corrupt baseline or report, a bad option or fault spec.

Why one class: every entry point (the pytest plugin, each `csm-conformance <verb>`) must
turn such an error into one line and a usage exit code, never a traceback wall, while a bug still
shows its traceback. Each specific error keeps its own name and its old base (ValueError or
RuntimeError), so code that catches those still does.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an unusable environment; the message is one line, printed as it is."""

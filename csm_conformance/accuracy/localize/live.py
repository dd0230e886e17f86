"""One case localized live, in the running session: capture both sides, add the local errors, judge.

The accuracy checks call this when a check fails (or under --csm-localize / --csm-dump); it ties
the captures (capture.py), the module-local errors the session computes and bounds (local.py and
the module_local check) and the rule (report.py) together, and hands back the captures with
their dump metadata for save_dump (dump.py).
"""

from __future__ import annotations

from csm_conformance.accuracy.localize.capture import capture_case
from csm_conformance.accuracy.localize.dump import _label, _side_meta
from csm_conformance.accuracy.localize.report import Localization, localize
from csm_conformance.accuracy.localize.rule import coarser


def localize_case(session, case) -> tuple[Localization, dict]:
    """Capture and compare one case live; returns the localization and the captures with their
    metadata ({side: (tensors, meta)}) for `save_dump`."""
    reference, device = capture_case(session, case)
    kind = "prompt" if hasattr(case, "text") else "decode"
    sides = {"reference": (reference, _side_meta(session, "reference", case.id, kind, list(reference))),
             "device": (device, _side_meta(session, "device", case.id, kind, list(device)))}
    notes = [f"planted fault: {n}" for n in session.fault_notes]
    try:
        local = session.module_local_errors(case)
    except Exception as exc:  # the jump rule still has its say
        local = None
        notes.append(f"local errors could not be computed ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})")
    loc = localize(case.id, reference, device, coarser("float32", session.dtype_name),
                   _label(sides["reference"][1]), _label(sides["device"][1]), local=local,
                   local_bounds=session.module_local_bounds(case.id) if local else None)
    loc.notes.extend(notes)
    return loc, sides

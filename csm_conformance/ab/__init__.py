"""`python -m csm_conformance.ab` and `python -m csm_conformance.ab.planted`: the documented names
of the paired A/B comparison in tools/ab/; this package only keeps those names stable."""

"""csm-conformance: the logic shared by the CSM-1B conformance and regression tests."""

__version__ = "0.1.0"

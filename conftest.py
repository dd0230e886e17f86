"""Loads the csm-conformance plugin for every test under this directory."""

pytest_plugins = ["csm_conformance.plugin", "pytester"]

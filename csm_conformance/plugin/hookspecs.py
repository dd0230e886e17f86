"""Hooks a user's conftest.py or plugin implements to extend the suite without editing it.

Why hooks: a device the suite's tables do not know (a new Ascend part, a cloud GPU) should be
taught to it from the user's own repository, the way pytest-benchmark lets a conftest add machine
info. Registered by pytest_addhooks in plugin/__init__.py; named pytest_* because pytest takes only
such names as hook implementations from a plain function (as pytest-benchmark names its own).
"""

from __future__ import annotations

import pytest


@pytest.hookspec(firstresult=True)
def pytest_csm_memory_bandwidth_gbps(device_name: str, device_type: str) -> float | None:
    """The nominal memory bandwidth in GB/s of the device under test, for the bandwidth floor of the
    performance report; None to fall through to the suite's table. `--csm-memory-bandwidth` still
    wins over any answer. Example, in conftest.py:

        def pytest_csm_memory_bandwidth_gbps(device_name, device_type):
            return 1600.0 if "Ascend910B4" in device_name else None
    """

"""Fixtures of the ops tests (``acon_mm.ops``).

``cpu_ext``
    The compiled C++ extension (:func:`acon_mm.ops.load_cpu_ext`, sources in
    ``acon_mm/ops/csrc``); the test is skipped where it cannot be built (no compiler).
"""
import pytest


@pytest.fixture
def cpu_ext():
    from acon_mm.ops import cpu_ext_error, load_cpu_ext
    ext = load_cpu_ext()
    if ext is None:
        pytest.skip(f'the C++ extension could not be built here: {cpu_ext_error()}')
    return ext

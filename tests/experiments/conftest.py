import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    """Every test in this folder runs with one torch thread (fixture in tests/conftest.py)."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on the shared 2-core machine: one intra-op thread is many times faster than two
    contending ones. Restores the previous thread count afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

"""One torch thread for a test module whose workloads are thousands of small tensor ops: on a shared 2-core machine
two OpenMP threads made them 8-10x slower than one (spin-waiting while other processes hold the cores); on an idle
one, one thread costs little. Import ``one_thread`` into the module (autouse, module-scoped)."""
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

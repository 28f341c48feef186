"""An autouse fixture for tests of small matrices: on a shared machine a second torch
thread only adds contention (10x slower measured). Import it into a test module."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

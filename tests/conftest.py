"""Shared test configuration: the pytester fixture for the plugin's tests."""

pytest_plugins = ["pytester"]


def pytest_configure(config: object) -> None:
    """Run torch single-threaded: every tensor in the tests is tiny, and on a busy 2-core
    machine OpenMP's barrier waits made one BatchNorm call take 0.1 s instead of 50 us."""
    import torch

    torch.set_num_threads(1)

"""Shared test configuration: the pytester fixture for the plugin's tests, hypothesis's profile."""

from hypothesis import settings

pytest_plugins = ["pytester"]

# No per-example deadline: a gradient check of a 4x4 tensor takes 20 ms on a quiet machine and
# over 200 ms (hypothesis's default deadline) on a loaded 2-core one. Speed is measured in
# benchmarks/, never by a timed test.
settings.register_profile("gradcheck_kit_tests", deadline=None)
settings.load_profile("gradcheck_kit_tests")


def pytest_configure(config: object) -> None:
    """Run torch single-threaded: every tensor in the tests is tiny, and on a busy 2-core
    machine OpenMP's barrier waits made one BatchNorm call take 0.1 s instead of 50 us."""
    import torch

    torch.set_num_threads(1)

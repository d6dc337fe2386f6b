"""Kernel tests run on CPU through Triton's interpreter when there is no GPU.

TRITON_INTERPRET must be set before any @triton.jit kernel is defined, i.e. before
studio_kernels is first imported; pytest loads this conftest before the test modules.
"""

import os
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    if "studio_kernels" in sys.modules and os.environ["TRITON_INTERPRET"] != "1":
        raise pytest.UsageError("studio_kernels was imported before TRITON_INTERPRET=1 could be set")

from tolerances import TOLERANCES  # noqa: E402  (after TRITON_INTERPRET is settled)


@pytest.fixture
def assert_close():
    """assert_close(actual, expected) with the tolerance of actual's dtype, compared in fp32."""

    def check(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None):
        atol, rtol = TOLERANCES[dtype or actual.dtype]
        torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol)

    return check


@pytest.fixture(autouse=True)
def _single_torch_thread():
    """Run kernel tests on one intra-op thread and restore the setting afterwards.

    Their tensors are tiny; on a shared 2-core machine OpenMP threads spin against each other
    and other processes, making a 50 ms test take seconds.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_runtest_setup(item):
    """A GPU test that would run under the interpreter fails instead: it would pass without compiling anything."""
    if item.get_closest_marker("gpu") and torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") == "1":
        pytest.fail("TRITON_INTERPRET=1 is set on a machine with CUDA: the GPU tests would run interpreted, "
                    "not compiled; unset it", pytrace=False)


@pytest.fixture(autouse=True)
def _kernel_defaults(monkeypatch):
    """Each kernel test starts from the kernels' defaults, whatever an earlier test (a training run) set."""
    monkeypatch.delenv("STUDIO_KERNEL_DETERMINISTIC", raising=False)

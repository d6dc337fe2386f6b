"""Per-dtype tolerances (atol, rtol) for kernel results of O(1) magnitude: a few units of the dtype's last
place, since the kernels accumulate in fp32 in a different order than torch."""

import torch

TOLERANCES = {
    torch.float32: (2e-5, 2e-5),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (3e-2, 2e-2),
}

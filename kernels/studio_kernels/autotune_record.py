"""The autotuners' choices as JSON, so a resumed run launches every kernel with the config it used before.

Each autotuner times its configs once per key (shapes, dtypes) and keeps the fastest; timings are noisy,
so a fresh process can pick another config for the same key, and another config sums in another order:
a resume would then not continue the run it resumes bit for bit. Saving the choices with a checkpoint
and restoring them before the first step removes that difference. Restored choices take precedence over
Triton's own on-disk tuning cache (the in-memory table is consulted first). A record made on another GPU
model or Triton version is not restored: a config that fits an H100 may not fit an RTX 4090, and restored
choices skip the timing loop, which is where Triton drops a config the GPU cannot hold.
"""

from __future__ import annotations

from studio_kernels.triton_import import triton


def _autotuners() -> dict:
    """Every autotuner of the kernels, by a stable name (stand-ins without Triton have no table: left out)."""
    from studio_kernels.ops import fused_ce, nf4_matmul

    tuners = {**nf4_matmul.AUTOTUNERS, "ce_rows": fused_ce._ce_rows_tuned}
    return {name: t for name, t in tuners.items() if isinstance(getattr(t, "cache", None), dict)}


def _plain(value):
    """A key element as JSON keeps it (ints, bools, floats and dtype strings pass; anything else as its str)."""
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)


def where() -> dict:
    """What the choices depend on: this process's GPU (name and compute capability) and Triton version."""
    import torch

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        device = f"{torch.cuda.get_device_name()} (sm_{major}{minor})"
    else:
        device = "cpu"
    return {"device": device, "triton": getattr(triton, "__version__", None)}


def choices() -> dict:
    """{"where": where(), "tuners": {autotuner: [[key, {"kwargs", "num_warps", "num_stages"}], ...]}} for every
    key tuned in this process."""
    tuners = {}
    for name, tuner in _autotuners().items():
        rows = [[[_plain(k) for k in key], {"kwargs": dict(cfg.kwargs), "num_warps": cfg.num_warps,
                                            "num_stages": cfg.num_stages}] for key, cfg in tuner.cache.items()]
        if rows:
            tuners[name] = rows
    return {"where": where(), "tuners": tuners}


def restore(saved: dict) -> int:
    """Put saved choices back into the autotuners' tables; return how many. Nothing when they were made on
    another GPU model or Triton version; unknown autotuners are ignored (a checkpoint from another version of
    the kernels), and so is a config its autotuner does not list."""
    if saved.get("where") != where():
        return 0
    tuners, restored = _autotuners(), 0
    for name, rows in saved.get("tuners", {}).items():
        tuner = tuners.get(name)
        if tuner is None:
            continue
        for key, cfg in rows:
            if not any(c.kwargs == cfg["kwargs"] and c.num_warps == cfg["num_warps"] and c.num_stages == cfg["num_stages"]
                       for c in tuner.configs):
                continue
            tuner.cache[tuple(key)] = triton.Config(cfg["kwargs"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
            restored += 1
    return restored

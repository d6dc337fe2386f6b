"""How many Triton binaries each stage of the GPU session compiles, and about how long that takes.

A lent GPU is counted in minutes, and on a fresh machine most of a kernel benchmark's first minute is
Triton compiling: one binary per (kernel, argument dtypes, constexpr flags, specialization of the integer
arguments, launch config). This module predicts that count without a GPU, from the same inputs the stages
use: the benchmark's shapes and row counts, the kernels' routing (`_use_dequant`, SMALL_M), their config
lists, and which arguments the kernel leaves unspecialized (`NOT_SPECIALIZED`). Seconds per binary come
from the ahead-of-time compile report (benchmarks/results/compile-aot-*.json, sm_90), which times
Triton's real compiler per variant.

Stages run one after another on one machine and Triton caches binaries on disk, so a binary counts once,
in the first stage that needs it. tests/benchmarks/test_compile_plan.py checks every stage's prediction
against its time limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from benchmarks import RESULTS, ROOT

ARCH = 90  # the lent machine's GPU (H200); compile time hardly depends on the target

# The matmul kernel's integer arguments, in order (pointers are always 16-byte aligned: no difference).
_INT_ARGS = ("M", "P", "R", "IN_FEATURES", "stride_am", "stride_ar", "stride_cm", "stride_cp", "M_BUCKET")
_DTYPE_NAMES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


@dataclass(frozen=True)
class Binary:
    """One compiled kernel: what Triton's cache key depends on, in the compile report's vocabulary."""

    kernel: str  # as in the report: nf4_matmul_small, nf4_matmul_tiled, dequant, ce_rows
    dtype: str
    flags: str
    config: str  # the report's label plus warps and stages, e.g. "32x64x64 G8 split1 w4 s3"
    specialization: tuple = ()


def specialization(values: dict) -> tuple:
    """Each integer argument as Triton's launcher specializes it (compile_report._specialize: == 1 becomes a
    constant, divisible by 16 gets a hint), the kernel's NOT_SPECIALIZED ones left alone."""
    from benchmarks.compile_report import _specialize
    from studio_kernels.ops.nf4_matmul import NOT_SPECIALIZED

    return tuple((name, _specialize(v, fixed=name in NOT_SPECIALIZED)) for name, v in values.items())


def _config_label(cfg) -> str:
    from benchmarks.compile_report import _matmul_label

    return f"{_matmul_label(cfg.kwargs)} w{cfg.num_warps} s{cfg.num_stages}"


def matmul_binaries(out_f: int, in_f: int, m: int, dtype, *, forward: bool, bias: bool, large_m: str,
                    autotune: bool, threshold: int = 1024) -> set[Binary]:
    """The binaries one `nf4_matmul_triton` (forward) or `nf4_matmul_grad_input_triton` call can compile.

    Follows `nf4_matmul._launch`: the dequantize path compiles the dequant kernel; the fused path compiles
    every config of the kernel's autotune list (the autotuner times them all) or the first of its fixed chain.
    """
    from studio_kernels.ops import nf4_matmul as ops
    from studio_kernels.ops import nf4_matmul_configs as configs

    name = _dtype_name(dtype)
    import torch

    if ops._use_dequant(m, large_m, torch.device("cuda"), max(out_f, in_f), dtype, threshold=threshold):
        return {Binary("dequant", name, "-", "BLOCK=1024 w4 s3")}
    small = m <= ops.SMALL_M
    p, r = (out_f, in_f) if forward else (in_f, out_f)
    spec = specialization(dict(zip(_INT_ARGS, (m, p, r, in_f, r, 1, p, 1, 1 << max(0, m - 1).bit_length()))))
    chain, tuned = (configs.FIXED_SMALL, configs.SMALL_CONFIGS) if small else (configs.FIXED_TILED, configs.TILED_CONFIGS)
    flags = ("fwd" if forward else "dX") + ("+bias" if bias else "")
    kernel = "nf4_matmul_small" if small else "nf4_matmul_tiled"
    return {Binary(kernel, name, flags, _config_label(c), spec) for c in (tuned if autotune else chain[:1])}


def bench_nf4_matmul(quick: bool) -> set[Binary]:
    """What `bench_nf4 --skip-training [--quick]` compiles: both products, fused and dequantize paths, every (shape, M)."""
    from benchmarks import bench_nf4

    shapes, ms = (bench_nf4.QUICK_SHAPES, bench_nf4.QUICK_MS) if quick else (bench_nf4.SHAPES, bench_nf4.MS)
    out = set()
    for out_f, in_f in shapes:
        for m in ms:
            for forward in (True, False):
                for large_m in ("fused", "dequant"):
                    out |= matmul_binaries(out_f, in_f, m, bench_nf4.DTYPE, forward=forward, bias=False,
                                           large_m=large_m, autotune=True)
    return out


def model_linears(model: dict) -> list[tuple[int, int]]:
    """(out, in) of a Llama-shaped model's seven projections, from a bench_nf4.MODELS entry."""
    h, i = model["hidden_size"], model["intermediate_size"]
    kv = h // model["num_attention_heads"] * model["num_key_value_heads"]
    return [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]


def bench_nf4_training(quick: bool, threshold: int | None) -> set[Binary]:
    """What `bench_nf4 --skip-matmul [--quick]` compiles for studio QLoRA (batch 1, seq 2048).

    threshold: the dispatch threshold the stage runs with (None: the fused kernel at every M, the most
    binaries; the autotuner then tunes the tiled kernel at every projection shape).
    """
    from benchmarks import bench_nf4

    models = ["llama-1b"] if quick else ["llama-1b", "llama-8b"]
    m = 2048
    out = set()
    for model in models:
        for out_f, in_f in model_linears(bench_nf4.MODELS[model]):
            for forward in (True, False):
                out |= matmul_binaries(out_f, in_f, m, bench_nf4.DTYPE, forward=forward, bias=False, large_m="auto",
                                       autotune=True, threshold=threshold if threshold is not None else 2**62)
    return out


def bench_grpo(threshold: int | None) -> set[Binary]:
    """What the grpo stage (`bench_grpo` with gpu_session.GRPO_STAGE_ARGS) compiles for studio QLoRA, bf16, on the
    seven projections of SmolLM2-135M (the bundled model, or its random-weight stand-in of the same shape).

    The forward at decode (M = the batch's completions: the small-M kernel), and the forward and input gradient at
    the training step's M (the batch's prompt and completion tokens; prefill's M is of the same kind: M and M_BUCKET
    are not specialized, so any M past SMALL_M compiles the same binaries). threshold as in bench_nf4_training.
    bitsandbytes QLoRA and bf16 LoRA compile nothing of the studio's.
    """
    import torch

    from benchmarks import bench_grpo as bench
    from benchmarks.gpu_session import GRPO_STAGE_ARGS

    args = bench.parse_args(GRPO_STAGE_ARGS)
    decode_m, train_m = args.batch, args.batch * (bench.PROMPT_MAX_LENGTH + args.completion)
    limit = threshold if threshold is not None else 2**62
    out = set()
    for out_f, in_f in model_linears(bench.RANDOM_SHAPES["smollm2-135m"]):
        out |= matmul_binaries(out_f, in_f, decode_m, torch.bfloat16, forward=True, bias=False, large_m="auto",
                               autotune=True, threshold=limit)
        for forward in (True, False):
            out |= matmul_binaries(out_f, in_f, train_m, torch.bfloat16, forward=forward, bias=False, large_m="auto",
                                   autotune=True, threshold=limit)
    return out


def parametrized(test) -> dict:
    """{argument: values} of a test function's @pytest.mark.parametrize marks: what it runs, read from the test."""
    return {m.args[0]: list(m.args[1]) for m in getattr(test, "pytestmark", []) if m.name == "parametrize"}


def _dtype_name(dtype) -> str:
    return _DTYPE_NAMES[str(dtype).removeprefix("torch.")]


def gpu_tests(every_config: bool) -> set[Binary]:
    """What the GPU tests compile with STUDIO_KERNEL_AUTOTUNE=0 (kernels/tests/test_gpu.py), their shapes,
    dtypes and row counts read from the tests' parametrization.

    every_config: only test_every_matmul_config_computes_the_product (its own stage); otherwise the rest.
    """
    import torch

    test_gpu = _gpu_test_module()
    n, k = test_gpu.N, test_gpu.K
    out = set()
    if every_config:
        params = parametrized(test_gpu.test_every_matmul_config_computes_the_product)
        for kind, cfg in params["param"]:
            m = 7 if kind == "small" else 300
            spec = specialization(dict(zip(_INT_ARGS, (m, n, k, k, k, 1, n, 1, 1))))
            for dtype in params["dtype"]:
                out.add(Binary(f"nf4_matmul_{kind}", _dtype_name(dtype), "fwd+bias", _config_label(cfg), spec))
        return out
    params = parametrized(test_gpu.test_cuda_matmul_forward_backward)
    for dtype in params["dtype"]:
        out.add(Binary("dequant", _dtype_name(dtype), "-", "BLOCK=1024 w4 s3"))
        for m in params["M"]:
            for large_m in params["large_m"]:
                out |= matmul_binaries(n, k, m, dtype, forward=True, bias=True, large_m=large_m, autotune=False)
                out |= matmul_binaries(n, k, m, dtype, forward=False, bias=False, large_m=large_m, autotune=False)
    for m in (1, 64, 132):  # the bitsandbytes comparison and the LoRA layer, bf16, large_m="auto"
        out |= matmul_binaries(n, k, m, torch.bfloat16, forward=True, bias=False, large_m="auto", autotune=False)
        out |= matmul_binaries(n, k, m, torch.bfloat16, forward=False, bias=False, large_m="auto", autotune=False)
    return out


def _gpu_test_module():
    """kernels/tests/test_gpu.py as a module: its shapes and config list are what the GPU tests compile."""
    import importlib.util
    import sys

    if "test_gpu" in sys.modules:
        return sys.modules["test_gpu"]
    spec = importlib.util.spec_from_file_location("test_gpu", ROOT / "kernels" / "tests" / "test_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fused_ce_binaries(dtypes=("bf16",), flags=("grad", "loss"), autotune: bool = True) -> set[Binary]:
    """The loss kernel at a vocabulary above 4096: every config of its autotune list, or its one fixed launch."""
    from studio_kernels.ops import fused_ce

    if autotune:
        configs = [(c.kwargs["BLOCK_V"], c.num_warps, c.num_stages) for c in fused_ce._ce_rows_tuned.configs]
    else:
        configs = [(*fused_ce._launch_config(2**17, None), 3)]  # 3: Triton's default num_stages
    return {Binary("ce_rows", d, f, f"BLOCK_V={bv} w{w} s{stages}") for bv, w, stages in configs for d in dtypes for f in flags}


# What each stage of benchmarks/gpu_session.py compiles (preflight compiles nothing).
STAGES = {
    # test_fused_ce's GPU test: bf16, with and without a softcap, autotuning off
    "gpu-tests": lambda: gpu_tests(every_config=False) | fused_ce_binaries(flags=("grad", "grad+softcap"), autotune=False),
    "nf4-quick-matmul": lambda: bench_nf4_matmul(quick=True),
    "nf4-quick-training": lambda: bench_nf4_training(quick=True, threshold=None),
    "grpo": lambda: bench_grpo(threshold=None),
    # SFT QLoRA jobs on the same SmolLM2-135M shape: M is not specialized, so the grpo stage's binaries (fixed configs).
    "packing": lambda: bench_grpo(threshold=None),
    "gpu-configs": lambda: gpu_tests(every_config=True),
    "nf4-matmul": lambda: bench_nf4_matmul(quick=False),
    "nf4-training": lambda: bench_nf4_training(quick=False, threshold=None),
    "memory-target": lambda: bench_nf4_training(quick=False, threshold=None) | fused_ce_binaries(),
    "memory": lambda: bench_nf4_training(quick=True, threshold=None) | fused_ce_binaries(),
    "fused_ce": lambda: fused_ce_binaries(("bf16", "fp32")),
}


def new_binaries_per_stage(names: list[str]) -> dict[str, set[Binary]]:
    """For stages run in this order on one machine: the binaries each compiles that no earlier stage did."""
    seen: set[Binary] = set()
    out = {}
    for name in names:
        needed = STAGES[name]() if name in STAGES else set()
        out[name] = needed - seen
        seen |= needed
    return out


def newest_report(triton_version: str | None = None) -> dict:
    """The newest committed compile report made with `triton_version` (default: the installed Triton), else the newest."""
    if triton_version is None:
        from studio_kernels.triton_import import triton

        triton_version = triton.__version__
    reports = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("compile-aot-*.json"), key=lambda p: p.stem[-15:])]
    same = [r for r in reports if r["environment"].get("triton") == triton_version]
    return (same or reports)[-1]


def compile_seconds(report: dict | None = None) -> dict:
    """Seconds per (kernel, dtype, flags, config) at sm_90 from `report` (default: newest_report()); `default` for the rest."""
    report = report or newest_report()
    times = {}
    for v in report["variants"]:
        if v["arch"] == ARCH:
            times[(v["kernel"], v["dtype"], v["flags"], f"{v['config']} w{v['num_warps']} s{v['num_stages']}")] = v["seconds"]
    times["default"] = max(times.values())
    return times


def seconds(binaries: set[Binary], times: dict) -> float:
    """Predicted compile seconds of `binaries` (the slowest measured variant for any the report lacks)."""
    return sum(times.get((b.kernel, b.dtype, b.flags, b.config), times["default"]) for b in binaries)

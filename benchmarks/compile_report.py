"""Compile every Triton kernel for NVIDIA GPUs ahead of time, on a machine without one.

    python -m benchmarks.compile_report                      # sm_90 (H100/H200), every variant
    python -m benchmarks.compile_report --arch 80,86,89,90   # also Ampere and Ada
    python -m benchmarks.compile_report --quick              # a representative subset, bf16 only (CI)

The kernels are tested on the CPU under Triton's interpreter, which accepts code the GPU compiler may reject
and says nothing about registers or shared memory. This script runs the real compiler (Triton's frontend,
LLVM and ptxas, all in the triton wheel) for a GPU target, no driver needed, for every variant a launch can
produce: each kernel in every autotune config and every fixed launch config, for each argument dtype and
constexpr flag combination the launchers pass. Per variant it records whether it compiled (or the error),
registers per thread, spilled bytes, shared memory against the architecture's per-block limit, num_warps
and num_stages. A config over the shared-memory limit is reported but is not a failure: the autotuner
prunes it at run time (after paying for its compilation). Exit status 1 when any variant fails to compile.

Arguments are specialized the way Triton's launcher specializes real ones (an int equal to 1 becomes a
constant, ints and pointers divisible by 16 get a divisibility hint), from representative shapes: a
4096 x 4096 weight, 4096 rows for the tiled matmul, 8 rows for the small-M one, vocab 128256 for the loss.

TRITON_INTERPRET must be unset when the kernels are imported (under it @triton.jit makes interpreter
objects, which cannot be compiled); this script removes it from its own environment before that import.
Writes <out>/compile-aot-<archs>-<time>.json (rewritten after every variant) and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import RESULTS
from benchmarks._gpu_env import Results

# Largest shared memory one block may opt into, in bytes (CUDA programming guide, compute capabilities).
ARCHS = {
    80: ("A100 / A30", 163 * 1024),
    86: ("RTX 30xx / A10 / A40", 99 * 1024),
    89: ("RTX 40xx / L4 / L40", 99 * 1024),
    90: ("H100 / H200", 227 * 1024),
}
DTYPES = ("fp32", "fp16", "bf16")
# Representative shapes (see the module docstring): they only decide which arguments are specialized.
HIDDEN = 4096
TILED_M = 4096
SMALL_M = 8
VOCAB = 128256
DEQUANT_BLOCK = 1024  # the fixed BLOCK of dequantize_nf4_triton's launch
NF4_BLOCKSIZE = 64  # bitsandbytes' default, the only one the project quantizes with

_PTXAS_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")


@dataclass(frozen=True)
class Ptr:
    """A pointer argument to an element type in Triton's spelling ("bf16", "u8", ...)."""

    dtype: str


@dataclass
class Variant:
    """One kernel specialization to compile: which kernel, its arguments and its launch config."""

    kernel: str  # the report's name for it
    module: str  # where the @triton.jit function lives (resolved in the worker: JIT functions do not pickle)
    attr: str
    dtype: str
    flags: str
    config: str
    args: dict  # runtime arguments by name: Ptr, int or float
    constexprs: dict
    num_warps: int
    num_stages: int


@dataclass
class Outcome:
    """What compiling one variant for one architecture gave."""

    arch: int
    kernel: str
    dtype: str
    flags: str
    config: str
    num_warps: int
    num_stages: int
    ok: bool = False
    error: str | None = None
    regs: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    stack: int | None = None
    shared: int | None = None
    shared_limit: int = 0
    seconds: float = 0.0

    @property
    def over_shared(self) -> bool:
        return self.shared is not None and self.shared > self.shared_limit

    @property
    def spills(self) -> int:
        return (self.spill_stores or 0) + (self.spill_loads or 0)


# ---------------------------------------------------------------------------------------------
# The variants: what the launchers in studio_kernels can ask the compiler for
# ---------------------------------------------------------------------------------------------


def _matmul_label(kw: dict) -> str:
    """The config's name in the report: BLOCK_M x BLOCK_P x BLOCK_R, GROUP_M, SPLIT_R ("128x256x64 G8 split1")."""
    return f"{kw['BLOCK_M']}x{kw['BLOCK_P']}x{kw['BLOCK_R']} G{kw['GROUP_M']} split{kw['SPLIT_R']}"


def _pick(configs: list, indices) -> list:
    """The configs at `indices` (negative ones count from the end); all of them when `indices` is None."""
    if indices is None:
        return list(configs)
    return [c for i, c in enumerate(configs) if i in indices or i - len(configs) in indices]


def _matmul_args(a: str, c: str, bias: str | None, m: int) -> dict:
    """Arguments of `_nf4_matmul_kernel` as `_launch` passes them, for a square HIDDEN x HIDDEN weight."""
    return dict(
        a_ptr=Ptr(a), packed_ptr=Ptr("u8"), scales_ptr=Ptr("fp32"), code_ptr=Ptr("fp32"),
        bias_ptr=Ptr(bias or c),  # without a bias the launcher passes C as a dummy pointer
        c_ptr=Ptr(c), M=m, P=HIDDEN, R=HIDDEN, IN_FEATURES=HIDDEN,
        stride_am=HIDDEN, stride_ar=1, stride_cm=HIDDEN, stride_cp=1, M_BUCKET=1 << (m - 1).bit_length(),
    )


# (W_IS_TRANSPOSED, HAS_BIAS): the forward with and without bias, and the input gradient (never a bias).
_MATMUL_PRODUCTS = ((True, True), (True, False), (False, False))


def matmul_variants(which: str, dtypes, product_filter=None, config_filter=None) -> list[Variant]:
    """Variants of the fused NF4 matmul in its tiled ("tiled") or small-M ("small") configs (nf4_matmul_configs.distinct_configs).

    Mirrors `nf4_matmul._launch`: small M accumulates atomically into an fp32 C, large M stores in the input
    dtype; fp32 inputs take the fp32 dot (DOT_FP32); the GPU never emulates bf16 rounding.
    """
    from studio_kernels.ops import nf4_matmul_configs as cfgs

    small = which == "small"
    configs = _pick(cfgs.distinct_configs(which), config_filter)
    variants = []
    for dtype in dtypes:
        c_dtype = "fp32" if small else dtype
        for transposed, has_bias in _MATMUL_PRODUCTS:
            if product_filter is not None and (transposed, has_bias) not in product_filter:
                continue
            flags = dict(W_IS_TRANSPOSED=transposed, HAS_BIAS=has_bias, USE_ATOMIC=small,
                         DOT_FP32=dtype == "fp32", EMULATE_BF16_RNE=False, BLOCKSIZE=NF4_BLOCKSIZE)
            label = ("fwd" if transposed else "dX") + ("+bias" if has_bias else "")
            for cfg in configs:
                variants.append(Variant(
                    kernel=f"nf4_matmul_{which}", module="studio_kernels.ops.nf4_matmul", attr="_nf4_matmul_kernel",
                    dtype=dtype, flags=label, config=_matmul_label(cfg.kwargs),
                    args=_matmul_args(dtype, c_dtype, dtype if has_bias else None, SMALL_M if small else TILED_M),
                    constexprs={**flags, **cfg.kwargs}, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                ))
    return variants


def ce_variants(dtypes, config_filter=None, flag_filter=None) -> list[Variant]:
    """Variants of the cross-entropy row kernel: its autotune configs plus the fixed launch config.

    Every (HAS_SOFTCAP, COMPUTE_GRAD) combination: the loss without gradients is the evaluation path.
    """
    from studio_kernels.ops import fused_ce

    block_v, warps = fused_ce._launch_config(VOCAB, None)  # the launch without autotuning (V <= 4096)
    configs = [(c.kwargs["BLOCK_V"], c.num_warps, c.num_stages) for c in fused_ce._ce_rows_tuned.configs]
    configs.append((block_v, warps, 3))  # 3: Triton's default num_stages
    configs = _pick(configs, config_filter)
    variants = []
    for dtype in dtypes:
        for softcap in (False, True):
            for grad in (True, False):
                if flag_filter is not None and (softcap, grad) not in flag_filter:
                    continue
                args = dict(logits_ptr=Ptr(dtype), stride_row=VOCAB, labels_ptr=Ptr("i64"), loss_ptr=Ptr("fp32"),
                            scale_ptr=Ptr("fp32"), V=VOCAB, ignore_index=-100, softcap=30.0)
                label = ("grad" if grad else "loss") + ("+softcap" if softcap else "")
                for bv, w, s in configs:
                    variants.append(Variant(
                        kernel="ce_rows", module="studio_kernels.ops.fused_ce", attr="_ce_rows_kernel",
                        dtype=dtype, flags=label, config=f"BLOCK_V={bv}", args=args,
                        constexprs=dict(HAS_SOFTCAP=softcap, COMPUTE_GRAD=grad, EMULATE_BF16_RNE=False, BLOCK_V=bv),
                        num_warps=w, num_stages=s,
                    ))
    return variants


def dequant_variants(dtypes) -> list[Variant]:
    """Variants of the NF4 dequantize kernel at its fixed launch config, for each output dtype."""
    return [
        Variant(
            kernel="dequant", module="studio_kernels.ops.dequant", attr="_dequant_kernel", dtype=dtype, flags="-",
            config=f"BLOCK={DEQUANT_BLOCK}",
            args=dict(packed_ptr=Ptr("u8"), scales_ptr=Ptr("fp32"), code_ptr=Ptr("fp32"), out_ptr=Ptr(dtype),
                      numel=HIDDEN * HIDDEN),
            constexprs=dict(BLOCKSIZE=NF4_BLOCKSIZE, BLOCK=DEQUANT_BLOCK, EMULATE_BF16_RNE=False),
            num_warps=4, num_stages=3,  # Triton's defaults: the launch sets neither
        )
        for dtype in dtypes
    ]


def all_variants(quick: bool) -> list[Variant]:
    """Every variant, or with `quick` a representative few in bf16: the first and last config of each matmul
    kernel (tiled: the forward with bias; small-M: the input gradient), one loss config with every branch
    taken, and dequant."""
    if quick:
        return (
            matmul_variants("tiled", ["bf16"], [(True, True)], config_filter={0, -1})
            + matmul_variants("small", ["bf16"], [(False, False)], config_filter={0, -1})
            + ce_variants(["bf16"], config_filter={1}, flag_filter=[(True, True)])
            + dequant_variants(["bf16"])
        )
    return (
        matmul_variants("tiled", DTYPES) + matmul_variants("small", DTYPES)
        + ce_variants(DTYPES) + dequant_variants(DTYPES)
    )


# ---------------------------------------------------------------------------------------------
# Compiling one variant (in a worker process)
# ---------------------------------------------------------------------------------------------


def _specialize(value, fixed: bool = False) -> tuple[str, str | None]:
    """Triton's type and specialization of a runtime argument, as its launcher derives them.

    ("constexpr", None) for an int equal to 1, which the launcher turns into a constant; "D" marks
    divisibility by 16 (pointers: torch's allocations are aligned far beyond 16 bytes). fixed: the kernel
    names the argument in do_not_specialize, so it gets neither.
    """
    if isinstance(value, Ptr):
        return f"*{value.dtype}", "D"
    if isinstance(value, float):
        return "fp32", None
    if fixed:
        return ("i32" if -(2**31) <= value < 2**31 else "i64"), None
    if value == 1:
        return "constexpr", None
    ty = "i32" if -(2**31) <= value < 2**31 else "i64"
    return ty, "D" if value % 16 == 0 else None


def build_source(fn, variant: Variant):
    """The ASTSource Triton's launcher would compile for `variant`'s arguments."""
    from triton.compiler import ASTSource

    signature, constexprs, attrs = {}, dict(variant.constexprs), {}
    for i, name in enumerate(fn.arg_names):
        if name in variant.constexprs:
            signature[name] = "constexpr"
            continue
        value = variant.args[name]
        ty, hint = _specialize(value, fixed=name in fn.do_not_specialize or i in fn.do_not_specialize)
        signature[name] = ty
        if ty == "constexpr":
            constexprs[name] = value
        elif hint == "D":
            attrs[(i,)] = [["tt.divisibility", 16]]
    return ASTSource(fn, signature, constexprs, attrs)


def parse_ptxas_log(log: str) -> dict:
    """Registers, spill stores/loads and stack frame bytes from `ptxas -v` output (empty if absent)."""
    regs, spills = _PTXAS_REGS.search(log), _PTXAS_SPILLS.search(log)
    if not regs or not spills:
        return {}
    stack, stores, loads = (int(x) for x in spills.groups())
    return dict(regs=int(regs.group(1)), spill_stores=stores, spill_loads=loads, stack=stack)


def _ptxas_rerun(ptx: str, arch: int) -> str:
    """`ptxas -v` on the kernel's PTX, for a Triton version whose compile does not print the log.

    Without Triton's own extra ptxas flags, so its figures may differ from the compile's by a few registers.
    """
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "k.ptx")
        src.write_text(ptx)
        cmd = [get_ptxas(arch).path, "-v", f"--gpu-name={sm_arch_from_capability(arch)}", str(src), "-o", f"{src}.o"]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stderr


def ptxas_stats(compile_log: str, ptx: str, arch: int) -> dict:
    """Registers and spills from the compile's ptxas log, else from running ptxas again; {} if neither works."""
    stats = parse_ptxas_log(compile_log)
    if stats:
        return stats
    try:
        return parse_ptxas_log(_ptxas_rerun(ptx, arch))
    except (ImportError, AttributeError, OSError, subprocess.CalledProcessError):
        return {}


def _first_lines(text: str, n: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[:n])


def compile_variant(variant: Variant, arch: int) -> Outcome:
    """Compile `variant` for sm_<arch> and read registers, spills and shared memory; never raises."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget

    out = Outcome(arch, variant.kernel, variant.dtype, variant.flags, variant.config, variant.num_warps,
                  variant.num_stages, shared_limit=ARCHS[arch][1])
    fn = getattr(importlib.import_module(variant.module), variant.attr)
    # enable_fp_fusion: what launches get by default (passing it also silences triton 3.9's notice about
    # the default changing).
    options = dict(num_warps=variant.num_warps, num_stages=variant.num_stages, enable_fp_fusion=True)
    log = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):  # the ptxas log (and, on a ptxas failure, the whole PTX)
            compiled = triton.compile(build_source(fn, variant), target=GPUTarget("cuda", arch, 32), options=options)
    except Exception as e:  # noqa: BLE001 - any compile error is a finding to report, not a crash
        out.error = _first_lines(f"{type(e).__name__}: {e}")
        out.seconds = time.perf_counter() - start
        return out
    stats = ptxas_stats(log.getvalue(), compiled.asm["ptx"], arch)
    out.seconds = time.perf_counter() - start
    out.ok = bool(stats)
    out.error = None if stats else "compiled, but no ptxas statistics could be read"
    out.shared = compiled.metadata.shared
    for k, v in stats.items():
        setattr(out, k, v)
    return out


def _init_worker(cache_dir: str) -> None:
    """Per worker: a private Triton cache, every variant really compiled, and ptxas' -v log printed."""
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    from triton import knobs

    knobs.cache.dir = cache_dir
    knobs.compilation.always_compile = True  # a cache hit would skip ptxas and its statistics
    knobs.nvidia.dump_ptxas_log = True


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------

_COLUMNS = ("sm", "kernel", "dtype", "flags", "config", "warps", "stages", "regs", "spill st/ld", "smem KiB",
            "status")
# Fixed widths, so rows printed as they finish (in completion order) still line up.
_WIDTHS = (3, 16, 5, 12, 24, 5, 6, 4, 11, 8, 0)


def _row(o: Outcome) -> list[str]:
    if not o.ok:
        status = "FAILED"
    elif o.over_shared:
        status = f"over smem ({o.shared_limit // 1024} KiB)"
    elif o.spills:
        status = "spills"
    else:
        status = "ok"
    spill = "-" if o.spill_stores is None else f"{o.spill_stores}/{o.spill_loads}"
    smem = "-" if o.shared is None else f"{o.shared / 1024:.1f}"
    regs = "-" if o.regs is None else str(o.regs)
    return [str(o.arch), o.kernel, o.dtype, o.flags, o.config, str(o.num_warps), str(o.num_stages), regs, spill,
            smem, status]


def format_row(cells) -> str:
    """One line of the printed table."""
    return "  ".join(str(c).ljust(w) for c, w in zip(cells, _WIDTHS)).rstrip()


def _md_table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def summary(outcomes: list[Outcome]) -> list[dict]:
    """Per architecture: variants, failures, over-shared-memory and spilling counts, the most registers."""
    rows = []
    for arch in sorted({o.arch for o in outcomes}):
        mine = [o for o in outcomes if o.arch == arch]
        rows.append(dict(
            arch=arch, gpus=ARCHS[arch][0], variants=len(mine), failed=sum(not o.ok for o in mine),
            over_shared=sum(o.ok and o.over_shared for o in mine), spilling=sum(o.ok and o.spills > 0 for o in mine),
            max_regs=max((o.regs or 0 for o in mine), default=0),
        ))
    return rows


def markdown(env: dict, outcomes: list[Outcome]) -> str:
    """The report: environment, per-architecture summary, then failures, shared-memory excess, spills, all rows."""
    lines = ["# Ahead-of-time compile report", ""]
    lines += [f"- {k}: {v}" for k, v in env.items()] + [""]
    lines += _md_table(["sm", "GPUs", "variants", "failed", "over smem", "spilling", "max regs"],
                       [list(r.values()) for r in summary(outcomes)]) + [""]
    failed = [o for o in outcomes if not o.ok]
    over = [o for o in outcomes if o.ok and o.over_shared]
    spilling = sorted((o for o in outcomes if o.ok and o.spills), key=lambda o: -o.spills)
    if failed:
        lines += ["## Failed to compile", ""]
        for o in failed:
            lines += [f"- sm_{o.arch} {o.kernel} {o.dtype} {o.flags} {o.config}:", "", "```", o.error or "", "```", ""]
    for title, group in (("Over the shared-memory limit (pruned at run time)", over), ("Spilling registers", spilling)):
        if group:
            lines += [f"## {title}", ""] + _md_table(_COLUMNS, [_row(o) for o in group]) + [""]
    lines += ["## Every variant", ""] + _md_table(_COLUMNS, [_row(o) for o in outcomes])
    return "\n".join(lines) + "\n"


def print_findings(outcomes: list[Outcome]) -> None:
    """Per-architecture counts, then every failure, shared-memory excess and spill (the rows to act on)."""
    print()
    for s in summary(outcomes):
        print(f"sm_{s['arch']}: {s['variants']} variants, {s['failed']} failed, {s['over_shared']} over shared "
              f"memory, {s['spilling']} spilling, max {s['max_regs']} registers")
    for title, keep in (("failed to compile", lambda o: not o.ok),
                        ("over the shared-memory limit (the autotuner prunes these)", lambda o: o.ok and o.over_shared),
                        ("spilling registers", lambda o: o.ok and o.spills > 0)):
        group = [o for o in outcomes if keep(o)]
        if group:
            print(f"\n{title}:")
            print(format_row(_COLUMNS))
            for o in group:
                print(format_row(_row(o)))
                if not o.ok:
                    print("    " + (o.error or "").replace("\n", "\n    "))


def _result_dict(env: dict, outcomes: list[Outcome]) -> dict:
    rows = [{**asdict(o), "over_shared": o.over_shared} for o in outcomes]
    return {"environment": env, "summary": summary(outcomes), "variants": rows}


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_archs(text: str) -> list[int]:
    """The --arch list ("80,90" -> [80, 90]); only architectures whose shared-memory limit is known."""
    archs = [int(a) for a in text.replace("sm_", "").split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown or not archs:
        raise argparse.ArgumentTypeError(f"--arch takes a comma list of {sorted(ARCHS)}, got {text!r}")
    return archs


def _environment(archs: list[int]) -> dict:
    import torch
    import triton

    return {
        "gpu": "aot-" + "-".join(f"sm{a}" for a in archs),  # the results' file name
        "targets": ", ".join(f"sm_{a} ({ARCHS[a][0]}, {ARCHS[a][1] // 1024} KiB smem/block)" for a in archs),
        "torch": torch.__version__,
        "triton": triton.__version__,
    }


def _check_compilable() -> None:
    """Stop with a clear message when the kernels were defined under the interpreter."""
    from triton.runtime.jit import JITFunction

    from studio_kernels.ops import nf4_matmul

    if not isinstance(nf4_matmul._nf4_matmul_kernel, JITFunction):
        sys.exit("compile_report: studio_kernels was imported under TRITON_INTERPRET=1; its kernels cannot be compiled")


def _outcome(future, variant: Variant, arch: int) -> Outcome:
    """The worker's outcome, or a failed one when the worker itself died (a crash in the compiler)."""
    try:
        return future.result()
    except Exception as e:  # noqa: BLE001 - e.g. BrokenProcessPool: report the variant as failed, go on
        return Outcome(arch, variant.kernel, variant.dtype, variant.flags, variant.config, variant.num_warps,
                       variant.num_stages, error=f"worker died: {type(e).__name__}: {e}", shared_limit=ARCHS[arch][1])


def run(variants: list[Variant], archs: list[int], jobs: int, results: Results, env: dict) -> list[Outcome]:
    """Compile every variant for every arch in `jobs` processes, printing rows and saving the JSON as they come."""
    import multiprocessing

    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="triton-aot-") as cache:
        # fork: the workers inherit the imported torch/triton/studio_kernels instead of importing them again.
        with ProcessPoolExecutor(jobs, multiprocessing.get_context("fork"), _init_worker, (cache,)) as pool:
            futures = {pool.submit(compile_variant, v, a): (v, a) for a in archs for v in variants}
            print(format_row(_COLUMNS))
            for future in as_completed(futures):
                outcome = _outcome(future, *futures[future])
                outcomes.append(outcome)
                print(format_row(_row(outcome)), flush=True)
                results.save(_result_dict(env, outcomes))
    order = {(v.kernel, v.dtype, v.flags, v.config, v.num_warps, v.num_stages): i for i, v in enumerate(variants)}
    outcomes.sort(key=lambda o: (o.arch, order[(o.kernel, o.dtype, o.flags, o.config, o.num_warps, o.num_stages)]))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    """Compile, print the table and a summary, write the results; 1 when any variant failed to compile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=parse_archs, default=[90],
                        help="comma list of compute capabilities: 80, 86, 89, 90")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="a representative subset, bf16 only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiler processes")
    args = parser.parse_args(argv)

    os.environ.pop("TRITON_INTERPRET", None)  # before studio_kernels defines its kernels
    _check_compilable()
    env = _environment(args.arch)
    variants = all_variants(args.quick)
    results = Results(args.out, "compile", env)
    start = time.perf_counter()
    outcomes = run(variants, args.arch, max(1, args.jobs), results, env)
    env["seconds"] = round(time.perf_counter() - start, 1)
    results.finish(_result_dict(env, outcomes), lambda: markdown(env, outcomes))
    print_findings(outcomes)
    return 1 if any(not o.ok for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())

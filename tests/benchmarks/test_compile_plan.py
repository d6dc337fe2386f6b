"""The GPU session fits its device time: compile counts predicted per stage, against each stage's limit."""

import pytest

from benchmarks import compile_plan, gpu_session

# A stage may spend at most this share of its limit compiling; the rest is importing, building models, timing.
COMPILE_SHARE = 0.5


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return gpu_session.stages(smoke=False, results=tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def new_binaries(plan):
    return compile_plan.new_binaries_per_stage([s.name for s in plan])


@pytest.fixture(scope="module")
def times():
    return compile_plan.compile_seconds()


def test_the_default_budget_leaves_room_for_a_rerun_in_one_lease():
    runs = 2 * (gpu_session.DEFAULT_BUDGET_S + gpu_session.PER_RUN_OVERHEAD_S)
    assert runs + gpu_session.MACHINE_START_S <= gpu_session.DEVICE_SECONDS


def test_the_first_figures_get_their_full_limits_inside_the_default_budget(plan):
    """preflight, the fixed-config GPU tests, the quick sweep and the QLoRA step run even if each uses its whole limit."""
    names = [s.name for s in plan]
    first = names[: names.index("nf4-quick-training") + 1]
    assert first == ["preflight", "gpu-tests", "nf4-quick-matmul", "nf4-quick-training"]
    assert sum(s.limit_s for s in plan if s.name in first) <= gpu_session.DEFAULT_BUDGET_S


def test_every_stage_has_a_compile_prediction(plan):
    assert set(compile_plan.STAGES) == {s.name for s in plan} - {"preflight"}


def test_each_stage_compiles_within_its_share_of_its_limit(plan, new_binaries, times):
    report = []
    for stage in plan:
        binaries = new_binaries[stage.name]
        secs = compile_plan.seconds(binaries, times)
        report.append(f"{stage.name}: {len(binaries)} binaries, {secs:.0f} s of {stage.limit_s} s")
        assert secs <= COMPILE_SHARE * stage.limit_s, "\n".join(report)
    print("\n".join(report))


def test_the_compile_report_times_every_binary_the_session_compiles(new_binaries, times):
    """So the prediction is measured seconds, not the fallback: the report must be rerun when configs change."""
    missing = {(b.kernel, b.dtype, b.flags, b.config) for bs in new_binaries.values() for b in bs} - set(times)
    assert not missing, sorted(missing)[:10]


def test_the_full_sweep_compiles_nothing_the_quick_one_did_not(new_binaries):
    """M is not specialized and every benchmark shape is a multiple of 16: more shapes and M only retime."""
    assert new_binaries["nf4-matmul"] == set() and new_binaries["nf4-training"] == set()
    assert len(new_binaries["nf4-quick-matmul"]) > 20


def test_specializing_m_would_multiply_the_compiles(monkeypatch):
    """The model follows the kernel's NOT_SPECIALIZED: with M specialized, M = 1, 16 and 4096 compile apart."""
    from studio_kernels.ops import nf4_matmul

    unspecialized = len(compile_plan.bench_nf4_matmul(quick=True))
    monkeypatch.setattr(nf4_matmul, "NOT_SPECIALIZED", [])
    assert len(compile_plan.bench_nf4_matmul(quick=True)) > 1.5 * unspecialized


def test_the_every_config_prediction_is_the_tests_parametrization():
    """What the gpu-configs stage runs, read from the test's own parametrize marks, is what the plan prices."""
    module = compile_plan._gpu_test_module()
    marks = {m.args[0]: m.args[1] for m in module.test_every_matmul_config_computes_the_product.pytestmark
             if m.name == "parametrize"}
    dtype_names = {str(d).removeprefix("torch.").replace("bfloat16", "bf16").replace("float16", "fp16") for d in marks["dtype"]}
    expected = {(f"nf4_matmul_{kind}", dtype, compile_plan._config_label(cfg)) for kind, cfg in marks["param"] for dtype in dtype_names}
    predicted = {(b.kernel, b.dtype, b.config) for b in compile_plan.gpu_tests(every_config=True)}
    assert predicted == expected and dtype_names == {"bf16", "fp16"}

"""benchmarks.bench_grpo: every config trained through the studio's GRPO on a tiny model on the CPU, its
results file and table; the figures' arithmetic, the CPU wording and the skipped/failed rows without a run."""

import importlib.util
import json
import math
import os

import pytest
import torch
from helpers import write_jsonl

from benchmarks import bench_grpo as bench


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    rows = [{"prompt": f"add {i % 10} and {(i * 3) % 10}", "answer": str(i % 10 + (i * 3) % 10)} for i in range(16)]
    return write_jsonl(tmp_path_factory.mktemp("grpo-prompts") / "prompts.jsonl", rows)


@pytest.mark.slow
def test_every_config_is_measured_and_written_with_its_ratios(tiny_llama_dir, prompts, tmp_path):
    """About 30 s on 2 cores: three configs x (1 warm-up + 1 measured) GRPO steps of the tiny llama."""
    out, runs = tmp_path / "results", tmp_path / "runs"
    assert bench.main(["--model", str(tiny_llama_dir), "--data", str(prompts), "--steps", "1", "--warmup", "1",
                       "--completion", "8", "--device", "cpu", "--runs-dir", str(runs), "--out", str(out)]) == 0
    jsons, mds = list(out.glob("*.json")), list(out.glob("*.md"))
    assert len(jsons) == 1 and len(mds) == 1 and mds[0].stem == jsons[0].stem and not list(out.glob("*.tmp"))
    assert jsons[0].name.startswith(f"grpo-cpu{os.cpu_count()}-")  # the device names the file
    result = json.loads(jsons[0].read_text())
    assert result["complete"] is True and result["device"] == "cpu" and result["smoke"] is False
    assert result["environment"]["gpu"].startswith("cpu") and result["environment"]["cpu"]
    s = result["settings"]
    assert (s["steps"], s["warmup"], s["batch"], s["generations"], s["completion"]) == (1, 1, 8, 4, 8)

    rows = result["rows"]
    assert [r["config"] for r in rows] == list(bench.CONFIGS)  # one row per config, in the order run
    no_bnb = importlib.util.find_spec("bitsandbytes") is None
    for r in rows:
        if r["config"] == "bnb-qlora" and no_bnb:
            assert r["skipped"] == "bitsandbytes is not installed" and "step_s" not in r
            continue
        assert not r.get("error") and not r.get("skipped"), r
        assert r["dtype"] == "float32" and r["trained_steps"] == 2
        assert positive(r["step_s"]) and r["step_s_each"] == [r["step_s"]]
        assert positive(r["gen_tokens_per_s"]) and positive(r["gen_positions_per_s"]) and r["gen_calls"] == 1  # the warm-up's call left out
        assert 1 <= r["gen_tokens"] <= r["gen_positions"] <= 8 * 8 and r["gen_positions"] % 8 == 0  # 8 completions
        assert 1 <= r["completion_length"] <= 8 and positive(r["step_ratio"]) and positive(r["tokens_per_s_ratio"])
        # measured by the studio's own training: its run directory, trl's step_time per step in metrics.jsonl
        metrics = [json.loads(line) for line in (runs / r["run"] / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in metrics if "step_time" in m] == [1, 2]
        assert r["step_s"] == next(m["step_time"] for m in metrics if m.get("step") == 2 and "step_time" in m)
        assert (runs / r["run"] / "adapter").is_dir()
    base = rows[0]
    assert base["step_ratio"] == 1.0 and base["tokens_per_s_ratio"] == 1.0
    lora = rows[2]
    assert lora["weights"] == "float32 on CPU (not bf16)" and lora["step_ratio"] == pytest.approx(lora["step_s"] / base["step_s"])

    md = mds[0].read_text()
    assert md.startswith("# GRPO step time and generation speed: cpu") and "**CPU figures**" in md
    assert "ran one after another in one process" in md and "float32 on CPU" in md
    table = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| config")}
    assert list(table) == list(bench.CONFIGS)
    assert "float32 on CPU" in table["lora-16bit"] and "bfloat16" not in table["lora-16bit"]
    assert "| 1.00 |" in table["studio-qlora"]  # its own ratios


@pytest.mark.slow
def test_smoke_mode_runs_a_random_model_and_says_the_numbers_mean_nothing(tmp_path):
    """What the GPU session's grpo stage runs under --smoke: the random-model path, the built-in prompts, one config."""
    assert bench.main(["--smoke", "--configs", "lora-16bit", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("grpo-smoke-cpu-smoke-*.json")
    result = json.loads(path.read_text())
    assert result["smoke"] is True and "mean nothing" in result["environment"]["note"]
    assert result["settings"]["model_note"] == "random weights, tiny shape"
    (row,) = result["rows"]
    assert positive(row["step_s"]) and positive(row["gen_tokens_per_s"]) and row["tokens_per_s_ratio"] is None  # no studio-qlora row
    assert "| lora-16bit | float32 on CPU (not bf16) |" in path.with_suffix(".md").read_text()


def test_new_tokens_stop_at_each_completions_end_of_sequence():
    out = torch.tensor([[5, 5, 7, 9, 2, 0, 0], [5, 5, 8, 8, 8, 8, 8], [5, 5, 2, 0, 0, 0, 0]])
    assert bench.new_tokens(out, prompt_length=2, eos_ids={2}) == (3 + 5 + 1, 3 * 5)
    assert bench.new_tokens(out, prompt_length=2, eos_ids=set()) == (15, 15)


def test_measured_figures_leave_the_warm_up_out():
    records = [{"step": s, "step_time": t, "completion_length": c, "reward": 0.5} for s, t, c in [(1, 9.0, 8), (2, 1.0, 4), (3, 3.0, 6), (4, 2.0, 2)]]
    records.append({"step": 4, "train_runtime": 20.0})  # the trainer's end-of-run summary
    calls = [{"step": 1, "seconds": 5.0, "tokens": 1, "positions": 8}] + [{"step": s, "seconds": 0.5, "tokens": 10, "positions": 16} for s in (2, 3, 4)]
    row = bench.measured(records, calls, warmup=1, steps=3)
    assert row["step_s"] == 2.0 and row["step_s_each"] == [1.0, 3.0, 2.0] and row["completion_length"] == 4.0
    assert row["gen_calls"] == 3 and row["gen_tokens_per_s"] == 20.0 and row["gen_positions_per_s"] == 32.0
    assert row["gen_share_of_step"] == pytest.approx(1.5 / 6.0)
    with pytest.raises(RuntimeError, match="step_time for 2 of the 3"):
        bench.measured(records[:3], calls, warmup=1, steps=3)


def test_ratios_skipped_and_failed_rows_and_gpu_wording():
    rows = bench.with_ratios([
        {"config": "studio-qlora", "weights": bench.weights("studio-qlora", "cuda"), "step_s": 2.0, "step_s_each": [2.0],
         "gen_tokens_per_s": 100.0, "gen_positions_per_s": 120.0, "gen_share_of_step": 0.6, "completion_length": 30.0,
         "reward": 0.25, "peak_allocated_gib": 1.5},
        {"config": "bnb-qlora", "weights": bench.weights("bnb-qlora", "cuda"), "skipped": "bitsandbytes is not installed"},
        {"config": "lora-16bit", "weights": bench.weights("lora-16bit", "cuda"), "step_s": 1.0, "step_s_each": [1.0],
         "gen_tokens_per_s": 250.0, "gen_positions_per_s": 260.0, "gen_share_of_step": 0.5, "completion_length": 31.0,
         "reward": 0.5, "peak_allocated_gib": 2.0},
    ])
    assert (rows[2]["step_ratio"], rows[2]["tokens_per_s_ratio"]) == (0.5, 2.5) and "step_ratio" not in rows[1]
    env = {"gpu": "NVIDIA H200", "gpu_gib": 139.8, "driver": "1", "cuda": "12.8", "torch": "2", "triton": "3"}
    settings = {"model": bench.BUNDLED, "model_note": bench.FALLBACK_NOTE, "data": "examples/inventory/train.jsonl", "batch": 8,
                "generations": 4, "completion": 64, "steps": 3, "warmup": 1, "configs": list(bench.CONFIGS)}
    md = bench.markdown({"environment": env, "device": "cuda", "smoke": False, "settings": settings, "rows": rows})
    assert md.startswith("# GRPO step time and generation speed: NVIDIA H200") and "CPU figures" not in md
    assert "| lora-16bit | bfloat16 | 1.000 | 0.50 | 250.0 | 2.50 |" in md and "| 2.00 |" in md  # peak GiB on a GPU
    assert "| bnb-qlora | NF4, bfloat16 compute | skipped: bitsandbytes is not installed |" in md
    assert "random weights in SmolLM2-135M's shape" in md
    failed = bench.markdown({"environment": env, "device": "cuda", "smoke": False, "settings": settings,
                             "rows": [{"config": "bnb-qlora", "weights": "NF4, bfloat16 compute", "error": "RuntimeError: boom"}]})
    assert "| failed: RuntimeError: boom |" in failed


def test_options_are_checked():
    args = bench.parse_args([])
    assert (args.model, args.steps, args.warmup, args.batch, args.generations, args.completion) == (bench.BUNDLED, 4, 1, 8, 4, 32)
    assert args.configs == ["studio-qlora", "bnb-qlora", "lora-16bit"] and args.data == bench.DEFAULT_DATA and args.data.exists()
    assert bench.parse_args(["--configs", "lora-16bit,studio-qlora"]).configs == ["lora-16bit", "studio-qlora"]
    for bad in (["--configs", "fp8-lora"], ["--batch", "6"], ["--generations", "1"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_the_random_stand_in_has_the_bundled_models_shape():
    """Where the demo package is installed and converted, its config.json is the shape the stand-in copies."""
    from studio.modeling.source import converted_demo_dir

    folder = converted_demo_dir()
    if folder is None:
        pytest.skip("the bundled model has not been converted on this machine")
    config = json.loads((folder / "config.json").read_text())
    shape = dict(bench.RANDOM_SHAPES["smollm2-135m"])
    assert shape.pop("rope_theta") == config["rope_parameters"]["rope_theta"]
    assert shape.pop("rms_norm_eps") == pytest.approx(config["rms_norm_eps"])
    assert all(config[k] == v for k, v in shape.items()), {k: (config[k], v) for k, v in shape.items() if config[k] != v}

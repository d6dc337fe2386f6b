"""The tabs' logic on a tiny model: a real `studio train` job through the queue, its curves and log, the data
inspector, the base-vs-adapter comparison, the adapter zip and the merge with its parity check."""

import json
import zipfile
from pathlib import Path

import helpers
import pytest

from studio.config.load import load_recipe
from studio.errors import StudioError
from studio.ui import context
from studio.ui.tabs import compare as compare_tab
from studio.ui.tabs import data as data_tab
from studio.ui.tabs import export as export_tab
from studio.ui.tabs import train as train_tab


def test_start_writes_the_recipe_into_the_workspace(ctx, finished_job, tiny_raw):
    run_dir = Path(finished_job.run_dir)
    assert run_dir == (ctx.home / "workspaces" / "local" / "runs" / "tiny-run").resolve()
    saved = load_recipe(finished_job.recipe_path)
    assert saved.output.dir == str(run_dir) and saved.lora.rank == tiny_raw["lora"]["rank"]
    with pytest.raises(StudioError, match="already exists"):
        train_tab.start_job(ctx, None, "tiny-run", tiny_raw)
    with pytest.raises(StudioError, match="invalid file name"):
        train_tab.start_job(ctx, None, "../escape", tiny_raw)


def test_job_view_shows_curves_progress_and_log(ctx, finished_job):
    stats, loss, lr, log, grpo = train_tab.job_view(ctx, None, finished_job.id)
    assert grpo is None  # a LoRA run has no rewards to plot
    assert "done" in stats and "step 2/2 (100%)" in stats and "val loss" in stats
    assert set(loss["series"]) == {"train", "validation"} and list(loss["step"][loss["series"] == "train"]) == [1, 2]
    assert len(lr) == 2 and (lr["lr"] > 0).all()
    assert "trained 2 steps" in log
    assert train_tab.job_rows(ctx, None)[0][:5] == [finished_job.id, "local", "tiny-run", "train", "done"]


def test_progress_text_eta_while_running():
    records = [{"step": 1, "train_loss": 2.0, "time_s": 10.0, "lr": 1e-3, "tokens_per_s": 50.0}, {"step": 2, "train_loss": 1.5, "time_s": 20.0, "lr": 9e-4}]
    text = train_tab.progress_text(records, 12, "running")
    assert "step 2/12" in text and "loss 1.5000" in text and "ETA 1m40s" in text
    assert "waiting" in train_tab.progress_text([], 12, "running")


def test_resume_job_runs_the_resume_command(ctx, finished_job):
    job = ctx.queue.enqueue("local", None, finished_job.run_dir, kind="resume")
    assert "--resume" in " ".join(__import__("studio.ui.jobs", fromlist=["x"]).train_command(job))
    ctx.queue.stop(job.id)  # queued -> stopped without running


def test_compare_base_and_adapter(ctx, finished_job):
    run_dir = finished_job.run_dir
    assert run_dir in compare_tab.adapter_runs(ctx, None)
    prompts = compare_tab.heldout_prompts(run_dir)
    assert prompts[0] == "add 1 and 1"
    base, adapter = compare_tab.compare(run_dir, prompts[0], 4)
    assert isinstance(base, str) and isinstance(adapter, str)
    with pytest.raises(StudioError, match="empty"):
        compare_tab.compare(run_dir, "  ", 4)


def test_compare_tab_checks_forgetting(ctx, finished_job):
    import torch

    run_dir = finished_job.run_dir
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model gains nothing from a second thread and loses much to hand-offs on a busy machine
    try:
        verdict, rows = compare_tab.forgetting(run_dir)
    finally:
        torch.set_num_threads(threads)
    recorded = json.loads((Path(run_dir) / "eval.json").read_text())["forgetting"]
    assert f"**{recorded['verdict']}**" in verdict and "KL(base ‖ adapter)" in verdict and "perplexity" in verdict
    assert len(rows) == recorded["questions"] and all(len(row) == len(compare_tab.FORGETTING_HEADERS) for row in rows)
    assert [row[2] for row in rows] == [compare_tab.shown_answer(a["base"]) for a in recorded["answers"]]
    with pytest.raises(StudioError, match="not a run directory"):
        compare_tab.forgetting(str(Path(run_dir).parent / "no-such-run"))


def test_export_zip_merge_and_card(finished_job):
    run_dir = finished_job.run_dir
    with zipfile.ZipFile(export_tab.adapter_zip(run_dir)) as archive:
        assert "adapter_config.json" in archive.namelist()
    parity, merged = export_tab.do_merge(run_dir)
    assert "passed" in parity and Path(merged, "config.json").exists()
    parity2, merged2, card = export_tab.run_info(run_dir)
    assert merged2 == merged and "passed" in parity2 and card.strip()


def test_merged_model_zip_is_built_in_the_workspace_and_reused(ctx, finished_job):
    run_dir = finished_job.run_dir
    space = ctx.workspace(None)
    export_tab.do_merge(run_dir)
    target = export_tab.merged_zip(space, run_dir)
    assert target == (space / "exports" / "tiny-run-merged.zip").resolve()
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        assert {"merged/config.json", "merged/model.safetensors", "merged/tokenizer.json"} <= set(names)
        assert archive.getinfo("merged/model.safetensors").compress_type == zipfile.ZIP_STORED
    built = target.stat().st_mtime_ns
    assert export_tab.merged_zip(space, run_dir).stat().st_mtime_ns == built  # unchanged folder: not rebuilt
    served = Path(context.served(target))
    assert served.read_bytes() == target.read_bytes() and not served.is_relative_to(space)
    info = export_tab.merged_info(run_dir)
    assert "Merged model size" in info and "large model" not in info
    with pytest.raises(StudioError, match="no merged model"):
        export_tab.merged_dir_of(str(Path(run_dir).parent / "nope"))


def test_large_merged_model_shows_path_and_size(finished_job, monkeypatch):
    monkeypatch.setattr(export_tab, "LARGE_BYTES", 10)
    info = export_tab.merged_info(finished_job.run_dir)
    assert "large model" in info and str(Path(finished_job.run_dir) / "merged") in info
    assert export_tab.human_size(3 * 2**30) == "3.0 GiB" and export_tab.human_size(512) == "512 B"


def test_model_card_front_matter_is_shown_as_yaml():
    shown = export_tab.card_markdown("---\nbase_model: x\ntags:\n- lora\n---\n# Card\ntext")
    assert shown.startswith("```yaml\nbase_model: x") and "\n# Card\ntext" in shown
    assert export_tab.card_markdown("# plain") == "# plain"


def test_data_inspector_renders_what_training_sees(tiny_raw, tiny_data, tmp_path):
    rows = [json.loads(line) for line in Path(tiny_data).read_text().splitlines()]
    unique = list({json.dumps(r, sort_keys=True): r for r in rows}.values())
    clean = helpers.write_jsonl(tmp_path / "clean.jsonl", unique)
    summary, warnings, sample, histogram = data_tab.inspect(str(clean), "auto", "", tiny_raw, 0)
    assert f"{len(unique)} rows" in summary and "format **chat** (detected: chat)" in summary and "`messages`" in summary
    assert "class='trained'" in sample and "class='eos'" in sample and "&lt;|im_end|&gt;" in sample
    assert "max_length 64" in histogram and "<svg" in histogram
    assert "No warnings" in warnings
    _, warnings, _, _ = data_tab.inspect(str(tiny_data), "auto", "", tiny_raw, 0)
    assert ("duplicate" in warnings) == (len(unique) < len(rows))
    messy = helpers.write_jsonl(tmp_path / "messy.jsonl", rows[:3] + [rows[0]] + [{"messages": rows[1]["messages"], "pad": "x" * 2000}])
    short = {**tiny_raw, "data": {**tiny_raw["data"], "max_length": 16}}
    _, warnings, _, _ = data_tab.inspect(str(messy), "chat", "", short, 4)
    assert "duplicate" in warnings and "longer than max_length 16" in warnings
    renamed = helpers.write_jsonl(tmp_path / "renamed.jsonl", [{"conv": r["messages"]} for r in rows[:2]])
    summary, *_ = data_tab.inspect(str(renamed), "chat", "{messages: conv}", tiny_raw, 0)
    assert "format **chat**" in summary


def test_uploads_land_in_the_workspace(ctx, tiny_data, tmp_path):
    stored = data_tab.store_upload(ctx, None, str(tiny_data))
    assert Path(stored).parent == (ctx.home / "workspaces" / "local" / "uploads").resolve()
    bad = tmp_path / "evil.sh"
    bad.write_text("echo")
    with pytest.raises(StudioError, match="unsupported"):
        data_tab.store_upload(ctx, None, str(bad))
    assert data_tab.row_warnings([]) == []

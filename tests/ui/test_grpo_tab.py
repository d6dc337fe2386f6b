"""GRPO in the UI: the grpo.rewards table and its picker, reward errors under their fields, the reward-file rule of a
shared server, the Data tab's prompt view with what each reward gives the reference, and the Train tab's reward,
KL and completion-length curves and completions table from a real GRPO job."""

import shlex
from types import SimpleNamespace

import helpers
import pytest

from studio.config.load import load_recipe
from studio.config.shipped import recipes_dir
from studio.config.validate import validate_recipe
from studio.errors import StudioError
from studio.training.rundir import COMPLETIONS, read_metrics
from studio.ui.access import check_recipe_paths, check_reward_file, rewards_dir, workspace
from studio.ui.accounts import Account
from studio.ui.context import Context
from studio.ui.form import form_fields, from_widget, recipe_to_values, to_widget, values_to_raw
from studio.ui.jobs import JobQueue
from studio.ui.rewards import add_reward, reward_help, rewards_named
from studio.ui.tabs import data as data_tab
from studio.ui.tabs import train as train_tab
from studio.ui.tabs.recipe import command_for, field_updates, preview_with_errors

SHIPPED_GRPO = recipes_dir() / "smollm2/135m-grpo.yaml"
# A reward file that leaves a mark when it is imported: it proves whether the UI ran it.
MARKING = "from pathlib import Path\nPath({marker!r}).write_text('imported')\n\ndef shout(completions):\n    return [float(c.isupper()) for c in completions]\n"


def rewards_spec():
    return next(s for s in form_fields() if s.key == "grpo.rewards")


def form_values(recipe, **changes) -> list:
    """The form's widget values for `recipe`, with some fields' widget values changed."""
    specs = form_fields()
    values = dict(zip([s.key for s in specs], recipe_to_values(specs, recipe)))
    values.update(changes)
    return list(values.values())


@pytest.fixture
def rewards_home(tmp_path, monkeypatch):
    """A studio home of its own, with the rewards folder a shared server's owner fills."""
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "studio-home"))
    rewards_dir().mkdir(parents=True)
    return rewards_dir()


def shared_context(home) -> Context:
    return Context(home=home, queue=JobQueue(home), accounts=[Account("ann", "0" * 64)])


def test_the_rewards_table_round_trips_and_reads_cells_like_fields():
    spec = rewards_spec()
    rewards = [{"name": "numeric_answer", "weight": 1.0, "args": {"tolerance": 0.01}}, {"name": "think_format", "weight": 0.2, "args": {}}]
    rows = to_widget(spec, rewards)
    assert rows == [["numeric_answer", 1.0, "{tolerance: 0.01}"], ["think_format", 0.2, ""]]
    assert from_widget(spec, rows) == [{"name": "numeric_answer", "weight": 1.0, "args": {"tolerance": 0.01}}, {"name": "think_format", "weight": 0.2}]
    # As the browser sends them: a blank row the table always shows, a weight typed as text, empty cells.
    assert from_widget(spec, [["regex_match", "0.5", "{pattern: '^A'}"], ["", "", ""], [None, None, None]]) == [{"name": "regex_match", "weight": 0.5, "args": {"pattern": "^A"}}]
    assert from_widget(spec, {"headers": ["name", "weight", "args"], "data": rows}) == from_widget(spec, rows)  # a Dataframe's value before any edit
    assert from_widget(spec, [["numeric_answer", None, ""]]) == [{"name": "numeric_answer"}]  # the schema's weight 1.0 applies


def test_an_edited_grpo_form_becomes_the_recipe_and_its_command():
    base = load_recipe(SHIPPED_GRPO)
    spec = rewards_spec()
    rows = add_reward(spec, recipe_to_values([spec], base)[0], "think_format", 0.2)
    values = form_values(base, **{"grpo.rewards": rows, "grpo.beta": 0.04, "grpo.loss_type": "dr_grpo"})
    recipe = validate_recipe(values_to_raw(form_fields(), values))
    assert [(r.name, r.weight) for r in recipe.grpo.rewards] == [("numeric_answer", 1.0), ("think_format", 0.2)]
    assert recipe.grpo.beta == 0.04 and recipe.grpo.loss_type == "dr_grpo"
    command = command_for(str(SHIPPED_GRPO), base, recipe)
    assert command.startswith("studio train smollm2/135m-grpo") and "'grpo.rewards=[{name: numeric_answer" in command
    overrides = [a for a in shlex.split(command.replace("\\\n", " "))[3:] if a != "--set"]
    assert load_recipe(SHIPPED_GRPO, overrides) == recipe  # the printed command reproduces the form


def test_the_picker_adds_a_reward_or_reweights_the_same_one():
    spec = rewards_spec()
    rows = [["numeric_answer", 1.0, ""], ["", "", ""]]
    assert add_reward(spec, rows, "think_format", 0.5) == [["numeric_answer", 1.0, ""], ["think_format", 0.5, ""]]
    assert add_reward(spec, rows, "numeric_answer", "2") == [["numeric_answer", 2.0, ""]]  # listed twice it would be refused
    with_options = [["numeric_answer", 1.0, "{tolerance: 0.5}"]]
    assert add_reward(spec, with_options, "numeric_answer", 1.0) == with_options + [["numeric_answer", 1.0, ""]]
    shipped = rewards_named()
    assert list(shipped)[0] == "numeric_answer" and "regex_match" in shipped
    assert "reads `answer`" in reward_help(shipped["numeric_answer"]) and "`tolerance: 1e-06`" in reward_help(shipped["numeric_answer"])
    assert "`pattern` (**required**" in reward_help(shipped["regex_match"]) and "the completion only" in reward_help(shipped["regex_match"])


@pytest.mark.parametrize(
    "rows, field, message",
    [
        ([["numeric_answr", 1.0, ""]], "grpo.rewards", "unknown reward 'numeric_answr'"),
        ([["regex_match", 1.0, ""]], "grpo.rewards", "needs the option 'pattern'"),
        ([["numeric_answer", 1.0, "{tolerence: 0.1}"]], "grpo.rewards", "has no option 'tolerence'"),
        ([["numeric_answer", 0, ""]], "grpo.rewards", "non-zero"),  # the schema's own check, on a cell
        ([["", "", ""]], None, "at least one reward"),
    ],
)
def test_reward_errors_are_shown_under_the_rewards_table(rows, field, message):
    specs = form_fields()
    status, text, _, _, raw, errors = preview_with_errors(specs, form_values(load_recipe(SHIPPED_GRPO), **{"grpo.rewards": rows}), str(SHIPPED_GRPO), 8.0)
    assert raw is None and text == "" and message in status
    assert list(errors) == ([field] if field else [])
    updates = dict(zip([s.key for s in specs], field_updates(specs, errors)))
    assert "info" not in updates["grpo.rewards"]  # a Dataframe takes no help text: it is only marked
    assert updates["grpo.rewards"]["elem_classes"] == (["field-error"] if field else [])


def test_a_reward_file_is_imported_once_and_its_rewards_can_be_named(tmp_path):
    marker = tmp_path / "imported"
    file = tmp_path / "mine.py"
    file.write_text(MARKING.format(marker=str(marker)))
    values = form_values(load_recipe(SHIPPED_GRPO), **{"grpo.reward_file": str(file), "grpo.rewards": [["shout", 1.0, ""]]})
    status, *_, errors = preview_with_errors(form_fields(), values, None, 8.0)
    assert "✓ valid" in status and errors == {} and marker.exists()  # one local user: any local file, as the CLI
    marker.unlink()
    preview_with_errors(form_fields(), values, None, 8.0)
    assert not marker.exists()  # cached: typing in the form does not run the file again
    assert rewards_named(str(file))["shout"].source == str(file)
    file.write_text("def shout(completions:\n")
    status, *_, errors = preview_with_errors(form_fields(), values, None, 8.0)
    assert list(errors) == ["grpo.reward_file"] and "syntax error" in status  # an edited file is read again


def test_a_shared_server_runs_only_reward_files_from_its_rewards_folder(rewards_home, tmp_path):
    marker = tmp_path / "imported"
    uploaded = tmp_path / "uploaded.py"
    uploaded.write_text(MARKING.format(marker=str(marker)))
    placed = rewards_home / "placed.py"
    placed.write_text(MARKING.format(marker=str(marker)))
    (rewards_home / "link.py").symlink_to(uploaded)
    assert check_reward_file("placed.py") == str(placed.resolve()) == check_reward_file(str(placed))
    for outside in (str(uploaded), "../uploaded.py", "link.py", ".", str(rewards_home)):
        with pytest.raises(StudioError, match="not in this server's rewards folder") as info:
            check_reward_file(outside)
        assert info.value.where == "grpo.reward_file" and str(rewards_home) in info.value.fix
    shared, local = shared_context(tmp_path / "shared"), Context(home=tmp_path / "local", queue=JobQueue(tmp_path / "local"))
    assert local.reward_file(str(uploaded)) == str(uploaded) and local.reward_file("") is None  # one local user: any file, like the CLI
    assert shared.reward_file("placed.py") == str(placed.resolve())
    values = form_values(load_recipe(SHIPPED_GRPO), **{"grpo.reward_file": str(uploaded), "grpo.rewards": [["shout", 1.0, ""]]})
    status, *_, errors = preview_with_errors(form_fields(), values, None, 8.0, shared.reward_file)
    assert list(errors) == ["grpo.reward_file"] and "rewards folder" in status and not marker.exists()  # refused before any import
    raw = {"grpo": {"reward_file": str(uploaded)}}
    with pytest.raises(StudioError, match="rewards folder"):
        shared.with_reward_file(raw)
    assert local.with_reward_file(raw) == raw and shared.with_reward_file({"grpo": {"reward_file": None}}) == {"grpo": {"reward_file": None}}
    assert not marker.exists()


def test_a_shared_server_trains_a_placed_reward_file_by_its_absolute_path(rewards_home, tmp_path):
    placed = rewards_home / "placed.py"
    placed.write_text("def shout(completions):\n    return [1.0 for _ in completions]\n")
    ctx = shared_context(tmp_path / "home")
    ann = SimpleNamespace(username="ann")
    raw = load_recipe(SHIPPED_GRPO).to_yaml_dict()
    raw["grpo"].update({"reward_file": "placed.py", "rewards": [{"name": "shout"}]})
    assert check_recipe_paths(workspace(ctx.home, "ann"), validate_recipe(raw)).grpo.reward_file == str(placed.resolve())
    job = ctx.queue.get(train_tab.start_job(ctx, ann, "placed", raw))
    assert load_recipe(job.recipe_path).grpo.reward_file == str(placed.resolve())  # what training imports
    raw["grpo"]["reward_file"] = str(tmp_path / "elsewhere.py")
    with pytest.raises(StudioError, match="rewards folder"):
        train_tab.start_job(ctx, ann, "elsewhere", raw)
    assert [j.id for j in ctx.queue.jobs()] == [job.id]  # nothing else was queued
    ctx.queue.stop(job.id)


def test_the_data_tab_shows_prompts_columns_and_reference_scores(grpo_raw, grpo_prompts, tmp_path):
    summary, warnings, sample, histogram = data_tab.inspect(str(grpo_prompts), "auto", "", grpo_raw, 1)
    assert "8 rows" in summary and "format **prompt** (detected: prompt)" in summary
    assert "prompt 12 tokens (templated), reference `7` · rewards on the reference: numeric_answer 1, length_target 1" in summary
    assert "No warnings" in warnings and "max_length 64" in histogram
    # The prompt exactly as the model is given it (the template's generation prompt appended), escaped.
    assert "&lt;|im_start|&gt;user\nadd 3 and 4&lt;|im_end|&gt;\n&lt;|im_start|&gt;assistant\n" in sample
    assert "prompts.jsonl:2 · prompt (chat template) · 12 tokens" in sample and "prompts.jsonl:5 ·" in sample and "prompts.jsonl:6 ·" not in sample
    assert "<th>answer<br><small>read by numeric_answer</small></th>" in sample
    assert sample.count("<td class='reference-score'>1</td>") == 2 * 4  # both rewards give each shown reference full marks
    gappy = helpers.write_jsonl(tmp_path / "gappy.jsonl", [{"prompt": "add 1 and 2", "answer": "3"}, {"prompt": "add <b>2</b> and 2"}])
    lora = {**grpo_raw, "method": "lora", "data": {**grpo_raw["data"], "max_length": 8}}
    _, warnings, sample, _ = data_tab.inspect(str(gappy), "auto", "", lora, 0)
    assert "method grpo, but the recipe's method is lora" in warnings and "once templated will be left out" in warnings
    assert "row has no 'answer' column, which reward numeric_answer needs at" in warnings and "gappy.jsonl:2" in warnings
    assert "<em>missing</em>" in sample and "<td class='reference-score'>–</td>" in sample and "&lt;b&gt;2&lt;/b&gt;" in sample
    unknown = {**grpo_raw, "grpo": {**grpo_raw["grpo"], "rewards": [{"name": "nope"}]}}
    _, warnings, sample, _ = data_tab.inspect(str(grpo_prompts), "auto", "", unknown, 0)
    assert "grpo.rewards: unknown reward 'nope'" in warnings and "reference-score" not in sample


def test_the_train_tab_plots_rewards_kl_and_lengths_of_a_real_grpo_run(grpo_ctx, finished_grpo_job):
    stats, loss, lr, log, grpo = train_tab.job_view(grpo_ctx, None, finished_grpo_job.id)
    assert "done" in stats and "step 2/2 (100%)" in stats and "reward " in stats and len(lr) == 2
    reward, kl, length, table = grpo
    assert set(reward["series"]) == {train_tab.TOTAL, "numeric_answer", "length_target"}
    assert list(reward["step"][reward["series"] == train_tab.TOTAL]) == [1, 2]
    records = {r["step"]: r for r in read_metrics(finished_grpo_job.run_dir) if "reward" in r}
    for step, total in zip(reward["step"][reward["series"] == train_tab.TOTAL], reward["reward"][reward["series"] == train_tab.TOTAL]):
        assert total == pytest.approx(records[step]["rewards/numeric_answer/mean"] + 0.5 * records[step]["rewards/length_target/mean"], abs=1e-5)
    assert list(kl["step"]) == [1, 2] and (kl["kl"] >= 0).all()  # beta > 0: trl logs the KL
    assert list(length["step"]) == [1, 2] and ((length["completion_length"] >= 1) & (length["completion_length"] <= 8)).all()
    samples = read_metrics(finished_grpo_job.run_dir, COMPLETIONS)
    assert list(table.columns) == ["step", "prompt", "completion", "numeric_answer", "length_target", "total"]
    assert len(table) == len(samples) == 8 and list(table["step"]) == [2] * 4 + [1] * 4  # newest first
    assert table["prompt"].str.startswith("add ").all() and list(table["total"])[:4] == [round(s["total"], 4) for s in samples[4:]]
    shown = train_tab.grpo_updates(grpo)
    assert shown[0]["visible"] is True and shown[3]["visible"] is True and shown[1]["value"] is reward
    stats, *_, grpo = train_tab.job_view(grpo_ctx, None, None)
    assert grpo is None and train_tab.grpo_updates(None)[0]["visible"] is False


def test_the_grpo_view_hides_what_a_run_does_not_log():
    records = [{"step": 1, "train_loss": 0.0, "reward": 0.5, "rewards/exact/mean": 0.5, "rewards/exact/std": 0.1, "completion_length": 7.0, "time_s": 1.0}]
    reward, kl, length = train_tab.grpo_curves(records)
    assert list(reward["series"]) == [train_tab.TOTAL, "exact"] and kl.empty and list(length["completion_length"]) == [7.0]
    assert train_tab.grpo_updates((reward, kl, length, train_tab.completion_table([])))[3]["visible"] is False  # no KL without grpo.beta
    assert train_tab.series_plot(train_tab.grpo_curves([])[0])["value"] is None  # a plot of series waits for its first rows
    long = {"step": 3, "prompt": "p", "completion": "x" * 2000, "rewards": {"exact": 1.0}, "total": 1.0}
    table = train_tab.completion_table([{**long, "step": s} for s in range(1, 30)], limit=5)
    assert list(table["step"]) == [29, 28, 27, 26, 25] and table["completion"][0] == "x" * train_tab.COMPLETION_CHARS + "…"
    assert "reward 0.500" in train_tab.progress_text(records, 4, "running")

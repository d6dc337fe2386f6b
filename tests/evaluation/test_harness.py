"""lm-evaluation-harness through `studio eval --tasks`: local task YAML over local data on a tiny model, base and
adapter with the same settings into eval.json and the card; a task whose data is not here refused before any model loads."""

from __future__ import annotations

import json

import helpers
import pytest

from studio.cli import main
from studio.errors import StudioError
from studio.evaluation import harness

QA = """task: tiny_qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
TEXT = """task: tiny_text
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: "{{{{text}}}}"
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: bits_per_byte
"""
HUB = """task: tiny_hub
dataset_path: some-lab/a-dataset-not-on-this-machine
test_split: test
output_type: loglikelihood_rolling
doc_to_text: "{{text}}"
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
"""


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    qa = helpers.write_jsonl(folder / "qa.jsonl", [{"question": f"What is {a} plus {b}?", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (5, 6)]])
    text = helpers.write_jsonl(folder / "text.jsonl", [{"text": "The sea is wide and the ships are small."}, {"text": "Three colours: red, green, blue."}])
    (folder / "tiny_qa.yaml").write_text(QA.format(data=qa))
    (folder / "tiny_text.yaml").write_text(TEXT.format(data=text))
    (folder / "tiny_hub.yaml").write_text(HUB)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_llama_dir, tiny_data):
    run = helpers.make_run_dir(tiny_llama_dir, tiny_data, tmp_path_factory.mktemp("harness") / "run", lora_std=0.05)
    (run / "eval.json").write_text(json.dumps({"metric": "exact_match", "adapter_score": 12.5}))
    return run


def test_local_tasks_score_base_and_adapter_alike(run, tasks, capsys):
    assert main(["eval", str(run), "--tasks", "tiny_qa,tiny_text", "--task-dir", str(tasks), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    record = json.loads((run / "eval.json").read_text())
    assert record["adapter_score"] == 12.5  # what `studio eval` wrote is kept
    result = record["harness"]
    assert printed["scores"] == result["scores"] and result["tasks"] == ["tiny_qa", "tiny_text"]
    assert result["settings"]["seed"] == harness.SEED and result["lm_eval"]
    qa, text = result["scores"]["tiny_qa"], result["scores"]["tiny_text"]
    assert set(qa) == {"exact_match"} and all(0.0 <= v <= 1.0 for v in qa["exact_match"].values())
    assert set(text) == {"word_perplexity", "bits_per_byte"}
    # The random LoRA weights change the model: its perplexity on the same text differs from the base's.
    assert text["word_perplexity"]["base"] > 1 and text["word_perplexity"]["adapter"] > 1
    assert text["word_perplexity"]["base"] != pytest.approx(text["word_perplexity"]["adapter"], rel=1e-6)
    card = (run / "README.md").read_text()
    assert "tiny_text" in card and "word_perplexity" in card


def test_a_task_without_its_data_here_is_refused_before_the_model_loads(run, tasks, monkeypatch, capsys):
    import studio.modeling.adapter as adapter

    monkeypatch.setattr(adapter, "load_with_adapter", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(StudioError, match="task tiny_hub cannot load its data here") as caught:
        harness.run_tasks(run, "tiny_hub", task_dir=tasks)
    assert "--task-dir" in caught.value.fix and caught.value.where == "--tasks tiny_hub"
    assert main(["eval", str(run), "--tasks", "tiny_hub", "--task-dir", str(tasks)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_bad_task_arguments_are_refused(run, tasks, tmp_path):
    with pytest.raises(StudioError, match="no task named"):
        harness.task_names(" , ")
    assert harness.task_names("a, b a") == ["a", "b"]
    with pytest.raises(StudioError, match="task folder not found"):
        harness.run_tasks(run, "tiny_qa", task_dir=tmp_path / "missing")
    with pytest.raises(StudioError, match="--limit must be at least 1"):
        harness.run_tasks(run, "tiny_qa", task_dir=tasks, limit=0)

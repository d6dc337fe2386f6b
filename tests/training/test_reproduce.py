"""`studio reproduce` re-derives a run from its directory alone: identical on CPU, refused on changed data."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import recipe_dict

from studio.cli import main
from studio.config.load import load_recipe
from studio.errors import StudioError
from studio.training.reproduce import reproduce
from studio.training.train import train


@pytest.fixture()
def trained(tiny_llama_dir, tiny_data, tmp_path):
    data = shutil.copy(tiny_data, tmp_path / "data.jsonl")
    result = train(load_recipe(recipe_dict(tiny_llama_dir, data, tmp_path / "run", train={"max_steps": 3})), progress=False)
    return result.run_dir, tmp_path / "data.jsonl"


def test_reproduction_on_cpu_is_identical(trained, tmp_path, capsys):
    run_dir, _data = trained
    assert main(["reproduce", str(run_dir), "--out", str(tmp_path / "again"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["identical"] is True
    assert report["max_loss_diff"] == 0.0 and report["max_adapter_diff"] == 0.0 and report["steps"] == 3
    assert json.loads((run_dir / "reproduce.json").read_text())["identical"] is True


def test_a_changed_dataset_is_refused_naming_the_file(trained):
    run_dir, data = trained
    data.write_text(data.read_text() + '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}\n')
    with pytest.raises(StudioError) as info:
        reproduce(run_dir)
    assert str(data) in str(info.value) and "changed since training" in str(info.value)
    assert not run_dir.with_name(run_dir.name + "-reproduced").exists()

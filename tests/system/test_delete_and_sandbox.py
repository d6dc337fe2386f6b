"""`studio delete` removes a run and nothing else; chat templates render in a sandbox."""

from __future__ import annotations

import pytest
from helpers import recipe_dict

from studio.cli import main
from studio.config.load import load_recipe
from studio.data import Renderer
from studio.data.formats import Example
from studio.errors import StudioError
from studio.modeling.loading import load_tokenizer
from studio.training.train import train


def test_delete_removes_the_run_and_only_the_run(tiny_llama_dir, tiny_data, tmp_path, capsys):
    data_before = tiny_data.read_bytes()
    run = train(load_recipe(recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "runs" / "a", train={"max_steps": 1})), progress=False).run_dir
    neighbour = tmp_path / "runs" / "b"
    neighbour.mkdir()
    (neighbour / "keep.txt").write_text("x")
    assert main(["delete", str(run)]) == 2  # no --yes and no terminal: refused
    assert run.exists()
    assert main(["delete", str(run), "--yes"]) == 0
    assert not run.exists() and (neighbour / "keep.txt").exists() and tiny_data.read_bytes() == data_before
    assert main(["delete", str(neighbour), "--yes"]) == 2  # not a run directory
    assert "not a run directory" in capsys.readouterr().err


def test_a_chat_template_cannot_reach_python_internals(tiny_llama_dir):
    recipe = load_recipe({"data": {"chat_template": "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m['content'] }}{% endfor %}"}})
    tokenizer = load_tokenizer(tiny_llama_dir, recipe)
    renderer = Renderer(tokenizer, 64)
    example = Example("row 1", messages=({"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}))
    with pytest.raises(StudioError, match="chat template failed to render: access to attribute .* is unsafe"):
        renderer.encode(example)

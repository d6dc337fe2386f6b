"""Did a vision LoRA learn to see? Held-out pictures through `studio eval` (base and adapter, the recipe's metric),
`studio chat --image`, and the Compare tab, on tiny random VLMs trained on a larger drawing of the shapes dataset.

The held-out pictures are new drawings (other positions and sizes) of the 12 colour-shape pairs, so a right answer
needs the pixels: a model that ignores the image can name at best one pair in twelve (8.3%).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from helpers import REPO
from tiny_vlms import vision_recipe

from studio.errors import StudioError
from studio.evaluation.evaluate import evaluate
from studio.training.train import train

CHANCE = 100 / 12


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """120 training pictures (every pair 10 times) and 24 held-out ones, drawn by the shipped generator."""
    spec = importlib.util.spec_from_file_location("make_shapes", REPO / "examples" / "shapes" / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    out = tmp_path_factory.mktemp("shapes")
    make_data.main(out, seed=5, repeats=10, test_repeats=2)
    return out


def learned(model_dir, out_dir, shapes, steps):
    recipe = vision_recipe(model_dir, out_dir, data_path=shapes / "train.jsonl",
                           data={"test_path": str(shapes / "test.jsonl"), "val_split": 0},
                           lora={"rank": 16, "alpha": 32}, eval={"metric": "exact_match", "max_new_tokens": 8},
                           train={"max_steps": steps, "batch_size": 8, "save_steps": steps})
    return train(recipe, progress=False).run_dir


@pytest.fixture(scope="module")
def idefics3_run(vlms, shapes, tmp_path_factory):
    return learned(vlms["idefics3"], tmp_path_factory.mktemp("idefics3"), shapes, steps=200)


def test_training_lifts_the_heldout_metric_on_new_pictures(idefics3_run):
    result = evaluate(idefics3_run)
    print(f"idefics3 exact match {result.base_score:.1f}% -> {result.adapter_score:.1f}%, loss {result.base_loss:.3f} -> {result.adapter_loss:.3f}")
    assert result.examples == 24 and result.base_score == 0.0
    assert result.adapter_score >= 3 * CHANCE  # it reads the pictures: far above what the text alone allows
    assert result.adapter_loss < result.base_loss - 0.5
    recorded = json.loads((idefics3_run / "eval.json").read_text())
    assert recorded["adapter_score"] == result.adapter_score
    sample = recorded["samples"][0]
    assert sample["prompt"] and "<image>" not in sample["prompt"] and len(sample["images"]) == 1
    assert sample["images"][0].endswith("test_0001.png")
    card = (idefics3_run / "README.md").read_text()
    assert "AutoModelForImageTextToText" in card and "AutoProcessor.from_pretrained('adapter')" in card and "image-text-to-text" in card
    assert f"| exact_match (adapter) | {result.adapter_score:.1f} |" in card


def test_the_same_picture_gets_the_same_answer_in_chat_and_compare(idefics3_run):
    from studio.evaluation.chat import ChatSession
    from studio.ui.tabs import compare as compare_tab

    sample = json.loads((idefics3_run / "eval.json").read_text())["samples"][0]
    session = ChatSession(idefics3_run)
    assert session.sees_images
    assert session.ask(sample["prompt"], sample["images"]) == sample["adapter"]

    cases = compare_tab.heldout_cases(str(idefics3_run))
    assert cases[0] == (sample["prompt"], sample["images"])
    base, adapter = compare_tab.compare(str(idefics3_run), sample["prompt"], 8, sample["images"][0])
    assert adapter == sample["adapter"] and base == compare_tab.shown_answer(sample["base"])


def test_the_compare_tab_shows_the_heldout_picture_as_training_reads_it(idefics3_run):
    from studio.ui.tabs import compare as compare_tab

    cases = compare_tab.heldout_cases(str(idefics3_run))
    text, update = compare_tab._case_values(cases, 1, compare_tab._image_pixels(str(idefics3_run)))
    assert text == cases[1][0] and update["visible"] and update["value"].size == (48, 48)
    assert compare_tab._image_pixels(str(idefics3_run)) > 0


def test_chat_checks_images_like_training_data(idefics3_run, tmp_path):
    from studio.evaluation.chat import ChatSession

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    session = ChatSession(idefics3_run)
    with pytest.raises(StudioError, match="cannot be read"):
        session.ask("What is in the picture?", [broken])
    assert session.history == []  # the failed turn left nothing behind


def test_studio_chat_answers_an_image_prompt(idefics3_run, capsys):
    from studio.cli import main

    sample = json.loads((idefics3_run / "eval.json").read_text())["samples"][0]
    assert main(["chat", str(idefics3_run), "--prompt", sample["prompt"], "--image", sample["images"][0], "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["answer"] == sample["adapter"] and printed["images"] == sample["images"]


def test_text_only_checks_refuse_a_vision_run(idefics3_run):
    from studio.evaluation.forgetting import check_forgetting

    with pytest.raises(StudioError, match="does not support vision-language runs"):
        check_forgetting(idefics3_run)


def test_a_gemma3_run_is_evaluated_on_its_pictures(vlms, shapes, tmp_path):
    run_dir = learned(vlms["gemma3"], tmp_path, shapes, steps=40)
    result = evaluate(run_dir, limit=12)
    assert result.examples == 12 and result.base_score == 0.0
    assert result.adapter_loss < result.base_loss
    assert all(s["images"] and s["adapter"] for s in result.samples)


def test_an_image_for_a_text_run_is_refused(tiny_llama_dir, tiny_data, tmp_path):
    from helpers import recipe_dict

    from studio.config.load import load_recipe
    from studio.evaluation.chat import ChatSession

    run = train(load_recipe(recipe_dict(tiny_llama_dir, tiny_data, tmp_path / "run", train={"max_steps": 1})), progress=False).run_dir
    with pytest.raises(StudioError, match="reads text only"):
        ChatSession(run).ask("hello", [REPO / "examples" / "shapes" / "imgs" / "0001.png"])


def test_the_report_shows_the_heldout_pictures_inline(idefics3_run):
    from studio.report import write_report

    evaluate(idefics3_run, limit=3)
    page = write_report(idefics3_run).path.read_text()
    assert page.count('<img class="thumb" src="data:image/png;base64,') == 3
    assert "test_0001.png" not in page  # the pictures travel in the page, not as paths of this machine

"""Vision-language LoRA end to end on tiny random VLMs (Gemma 3, Idefics3/SmolVLM) and the shapes dataset.

The mask (only the assistant's answer and its end token train, never an image token or a prompt), training through
the studio's normal entry with a run directory like a text run's, a falling loss, LoRA scoped to the language model
unless lora.vision is on, resume reproducing the uninterrupted run, the refusals, `studio merge` of a vision run
(parity on image prompts, a merged folder plain transformers loads and generates from) and its GGUF export.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import REPO, make_model_dir, write_jsonl
from safetensors.torch import load_file
from tiny_vlms import SHAPES, VLM_ARCHITECTURES, vision_recipe

from studio.config.load import load_recipe
from studio.data import IGNORE, build_data
from studio.data.vision import image_token_ids
from studio.errors import StudioError
from studio.modeling.vision import load_processor
from studio.training.checkpoints import last_checkpoint
from studio.training.prepare import resume_recipe
from studio.training.rundir import read_metrics
from studio.training.train import train

ANSWERS = [json.loads(line)["messages"][1]["content"] for line in SHAPES.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(vlms, tmp_path_factory) -> dict:
    """One 8-step run per architecture (checkpoints at 4 and 8), and its wall-clock seconds."""
    import time

    out = {}
    for arch, model_dir in vlms.items():
        start = time.perf_counter()
        result = train(vision_recipe(model_dir, tmp_path_factory.mktemp(arch)), progress=False)
        out[arch] = (result, time.perf_counter() - start)
    return out


def losses(run_dir) -> list[float]:
    return [m["train_loss"] for m in read_metrics(run_dir) if m.get("train_loss") is not None]


@pytest.mark.parametrize("arch", VLM_ARCHITECTURES)
def test_mask_trains_only_the_answer_and_its_end_token(vlms, arch, tmp_path):
    recipe = vision_recipe(vlms[arch], tmp_path)
    processor = load_processor(vlms[arch], recipe)
    data = build_data(recipe, processor)
    tok = processor.tokenizer
    assert len(data.train) == 24 and data.manifest["images"]["count"] == 24
    for row, answer in zip(data.train, ANSWERS):
        trained = [t for t, label in zip(row.input_ids, row.labels) if label != IGNORE]
        assert tok.decode(trained).strip() == answer + tok.eos_token
        assert all(label == IGNORE or label == tid for tid, label in zip(row.input_ids, row.labels))
        images = image_token_ids(processor)
        assert sum(t in images for t in row.input_ids) >= 4  # the image really is in the sequence, as tokens
        assert not any(label in images for label in row.labels)


def test_train_on_all_still_never_trains_image_tokens(vlms, tmp_path):
    recipe = vision_recipe(vlms["gemma3"], tmp_path, data={"train_on": "all"})
    processor = load_processor(vlms["gemma3"], recipe)
    row = build_data(recipe, processor).train[0]
    images = image_token_ids(processor)
    assert [label == IGNORE for label in row.labels] == [tid in images for tid in row.input_ids]


def test_the_collator_batches_pixels_with_the_rows(vlms, tmp_path):
    from studio.data.vision import VisionCollator

    recipe = vision_recipe(vlms["idefics3"], tmp_path)
    processor = load_processor(vlms["idefics3"], recipe)
    rows = build_data(recipe, processor).train[:3]
    batch = VisionCollator(processor, recipe.data.image_max_pixels)(
        [{"input_ids": r.input_ids, "labels": r.labels, "text": r.text, "images": list(r.images), "where": r.where} for r in rows])
    width = max(len(r.input_ids) for r in rows)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, width)
    assert batch["pixel_values"].shape[:2] == (3, 1) and batch["pixel_values"].dtype == torch.float32
    assert int(batch["attention_mask"].sum()) == sum(len(r.input_ids) for r in rows)


@pytest.mark.parametrize("arch", VLM_ARCHITECTURES)
def test_training_lowers_the_loss_and_writes_a_run_directory(runs, arch):
    result, seconds = runs[arch]
    curve = losses(result.run_dir)
    print(f"{arch}: loss {curve[0]:.3f} -> {curve[-1]:.3f} in {len(curve)} steps, {seconds:.1f}s")
    assert len(curve) == 8 and curve[-1] < curve[0] - 0.3
    for name in ("recipe.yaml", "metrics.jsonl", "data.json", "summary.json", "adapter/adapter_model.safetensors"):
        assert (result.run_dir / name).exists(), name
    # The adapter folder carries the processor, so the image side renders and loads as in training.
    assert (result.run_dir / "adapter" / "processor_config.json").exists()
    targets = json.loads((result.run_dir / "adapter" / "adapter_config.json").read_text())["target_modules"]
    language = {"gemma3": "model.language_model.", "idefics3": "model.text_model."}[arch]
    assert targets and all(t.startswith(language) for t in targets)  # the vision tower and projector stayed frozen


def test_lora_vision_adds_the_tower_and_the_projector(vlms, tmp_path):
    from studio.modeling.loading import load_for_training

    recipe = vision_recipe(vlms["idefics3"], tmp_path, lora={"vision": True})
    model, _, _ = load_for_training(recipe, torch.device("cpu"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".vision_model." in n and "lora_A" in n for n in trainable)
    assert any(".connector." in n and "lora_A" in n for n in trainable)
    assert any(".text_model." in n and "lora_A" in n for n in trainable)
    assert all("lora_" in n for n in trainable)


def test_resume_reproduces_the_uninterrupted_run(runs):
    result, _ = runs["idefics3"]
    run_dir = result.run_dir
    expected, curve = load_file(run_dir / "adapter" / "adapter_model.safetensors"), losses(run_dir)
    # A crash right after checkpoint-4: no adapter, no later checkpoint, no later metrics.
    shutil.rmtree(run_dir / "adapter")
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-8")
    (run_dir / "summary.json").unlink()
    kept = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= 4]
    (run_dir / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    assert last_checkpoint(run_dir).name == "checkpoint-4"
    assert train(resume_recipe(run_dir), resume=True, progress=False).steps == 8
    got = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    assert losses(run_dir) == pytest.approx(curve, rel=1e-5)


def test_image_data_on_a_text_model_is_refused(tmp_path):
    from studio.modeling.loading import load_tokenizer

    model_dir = make_model_dir(tmp_path / "text")
    recipe = vision_recipe(model_dir, tmp_path / "run")
    with pytest.raises(StudioError, match="text-only model"):
        build_data(recipe, load_tokenizer(model_dir, recipe))


def test_image_tokens_that_do_not_fit_max_length_are_refused(vlms, tmp_path):
    recipe = vision_recipe(vlms["gemma3"], tmp_path, data={"max_length": 10})
    with pytest.raises(StudioError, match="image tokens do not fit"):
        build_data(recipe, load_processor(vlms["gemma3"], recipe))


@pytest.mark.parametrize("section", [{"method": "dpo"}, {"data": {"packing": True}}])
def test_what_vision_models_do_not_do_is_refused_before_training(vlms, tmp_path, section):
    from studio.modeling.loading import load_for_training

    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}]) if "method" in section else SHAPES
    recipe = vision_recipe(vlms["gemma3"], tmp_path / "run", data_path=data, **section)
    with pytest.raises(StudioError, match="vision-language"):
        load_for_training(recipe, torch.device("cpu"))


def test_the_adapter_loads_in_plain_peft(runs):
    from peft import PeftModel
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    result, _ = runs["gemma3"]
    recipe = load_recipe(str(result.run_dir / "recipe.yaml"))
    base = AutoModelForImageTextToText.from_pretrained(recipe.model.name, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, result.run_dir / "adapter").eval()
    processor = AutoProcessor.from_pretrained(result.run_dir / "adapter")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    batch = processor(text=[prompt], images=[[Image.new("RGB", (48, 48), "red")]], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()


def test_text_only_loads_of_a_vision_run_are_refused(runs):
    from studio.modeling.adapter import load_with_adapter

    result, _ = runs["gemma3"]
    with pytest.raises(StudioError, match="does not support vision-language runs"):
        load_with_adapter(load_recipe(str(result.run_dir / "recipe.yaml")), result.run_dir / "adapter")


@pytest.mark.parametrize("arch", VLM_ARCHITECTURES)
def test_merge_reproduces_the_adapter_on_image_prompts_and_loads_in_plain_transformers(runs, arch):
    import time

    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from studio.export.merge import merge

    result, _ = runs[arch]
    start = time.perf_counter()
    merged = merge(result.run_dir)
    print(f"{arch}: merge rel diff {merged.rel_diff:.2e} on {merged.prompts} image prompts, {time.perf_counter() - start:.1f}s")
    assert merged.passed and merged.rel_diff <= merged.tolerance and merged.prompts == 4
    record = json.loads((result.run_dir / "merge.json").read_text())
    assert record["passed"] and record["consistency"]["passed"]
    assert any("vision-language run" in note for note in record["consistency"]["notes"])
    folder = merged.merged_dir
    assert (folder / "processor_config.json").exists() and list(folder.glob("*.safetensors"))

    # Plain transformers, nothing from the studio: the merged folder is a complete vision-language model.
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    image = Image.open(REPO / "examples" / "shapes" / "imgs" / "0001.png").convert("RGB")
    batch = processor(text=[prompt], images=[[image]], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > batch["input_ids"].shape[1]
    assert model.generation_config.eos_token_id in (processor.tokenizer.eos_token_id, [processor.tokenizer.eos_token_id])


def test_merge_folds_lora_on_the_vision_tower_in_and_compares_on_pixels(vlms, tmp_path):
    from studio.export.merge import _vision_probe_batch, merge

    recipe = vision_recipe(vlms["idefics3"], tmp_path, lora={"vision": True}, train={"max_steps": 4, "save_steps": 4})
    result = train(recipe, progress=False)
    processor = load_processor(result.run_dir / "adapter", recipe)
    batch = _vision_probe_batch(recipe, processor, torch.device("cpu"), torch.float32)
    # The probes carry pictures: the parity check runs the vision tower and projector, not just the text model.
    assert batch["pixel_values"].shape[0] == 4
    assert int(sum((batch["input_ids"] == i).sum() for i in image_token_ids(processor))) >= 16
    merged = merge(result.run_dir)
    assert merged.passed and merged.rel_diff <= merged.tolerance
    weights = load_file(next(merged.merged_dir.glob("*.safetensors")))
    assert not any("lora_" in k for k in weights)  # merged, not saved with the adapter beside it


def test_export_of_a_vision_run_writes_the_text_gguf_and_the_vision_projector(runs, tmp_path):
    from studio.export.exporter import export

    result, _ = runs["gemma3"]
    exported = export(result.run_dir, "gguf", out=tmp_path / "model.gguf")
    # tests/export/test_vision_export.py checks both files in detail, and the refusal of other vision architectures
    assert exported.passed and exported.path == tmp_path / "model.gguf" and exported.mmproj == tmp_path / "mmproj-model.gguf"
    assert exported.mmproj.exists() and exported.projector["projector_type"] == "gemma3"

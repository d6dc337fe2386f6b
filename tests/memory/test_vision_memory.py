"""The memory estimate of vision-language models: the tower's weights (16-bit under QLoRA), what an image costs in
tokens and tower positions for each kind of image plumbing, the shipped vision recipes offline, tiny local VLM
folders read from their config.json (checked against the real models), and the rows `studio estimate` prints."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from studio.config.load import load_recipe
from studio.config.shipped import shipped_recipe
from studio.config.validate import validate_recipe
from studio.memory.formula import estimate
from studio.memory.gpus import GIB
from studio.memory.shapes import KNOWN_CONFIGS
from studio.memory.vision_shapes import KNOWN_VISION, image_cost, vision_params

QWEN_VL = "Qwen/Qwen2.5-VL-3B-Instruct"
GEMMA = "google/gemma-3-4b-it"
SMOL = "HuggingFaceTB/SmolVLM-256M-Instruct"
LLAMA_V = "meta-llama/Llama-3.2-11B-Vision-Instruct"

# Each shipped vision recipe, its model and the model's published parameter count (language model + tower +
# projector, as the Hub's safetensors metadata gives it).
VISION_RECIPES = {
    "qwen2.5-vl/3b-qlora": (QWEN_VL, 3_754_622_976),
    "gemma3-vision/4b-qlora": (GEMMA, 4_300_079_472),
    "smolvlm/256m-lora": (SMOL, 256_484_928),
    "smolvlm/500m-lora": ("HuggingFaceTB/SmolVLM-500M-Instruct", 507_482_304),
    "llama3.2-vision/11b-qlora": (LLAMA_V, 10_670_220_835),
}


def vlm(name=QWEN_VL, **sections):
    raw = {"model": {"name": name}, "method": "qlora", "data": {"max_length": 1024}, "train": {"batch_size": 2, "gradient_checkpointing": True}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return validate_recipe(raw)


# --- The shipped vision recipes ------------------------------------------------------------------


@pytest.mark.parametrize("name", VISION_RECIPES)
def test_each_vision_recipe_is_estimated_offline_with_its_tower(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, total = VISION_RECIPES[name]
    recipe = load_recipe(shipped_recipe(name))
    result = estimate(recipe, 24)
    assert recipe.model.name == model and result["known"] and result["source"] == "known shapes table"
    assert result["params"] == total  # the language model's table entry plus the tower's: the whole checkpoint
    tower = result["vision"]["tower_params"]
    assert tower == KNOWN_VISION[model].params and 0.02 < tower / total < 0.4
    assert result["breakdown"]["vision_tower"] == pytest.approx(tower * 2 / GIB)  # bf16, for qlora too
    assert result["peak_gib"] == pytest.approx(sum(result["breakdown"].values()))
    assert result["fits"] and result["vision"]["fits_max_length"]  # the recipe's own max_length holds its image tokens
    json.dumps(result)  # the UI's API returns it as JSON


def test_known_tower_counts_follow_from_their_shapes():
    # The table's exact counts (checkpoint totals minus the language model) and the shape-only formula agree, so the
    # formula that local folders rely on is the one that reproduces the published models.
    for name, tower in KNOWN_VISION.items():
        assert vision_params(replace(tower, params=None)) == tower.params, name
        assert KNOWN_CONFIGS[name].vision is tower


# --- Weights: the tower stays 16-bit -----------------------------------------------------------------


def test_qlora_quantizes_the_language_model_but_keeps_the_tower_16_bit():
    qlora, lora = estimate(vlm(method="qlora"), 24), estimate(vlm(method="lora"), 24)
    assert qlora["breakdown"]["weights"] < lora["breakdown"]["weights"] / 2
    assert qlora["breakdown"]["vision_tower"] == lora["breakdown"]["vision_tower"] == pytest.approx(668_684_288 * 2 / GIB)
    fp32 = estimate(vlm(method="qlora", model={"dtype": "float32"}), 24)
    assert fp32["breakdown"]["vision_tower"] == pytest.approx(2 * qlora["breakdown"]["vision_tower"])
    text = estimate(vlm(name="Qwen/Qwen2.5-1.5B-Instruct"), 24)
    assert "vision_tower" not in text["breakdown"] and "image_activations" not in text["breakdown"] and "vision" not in text


# --- What one image costs --------------------------------------------------------------------------


@pytest.mark.parametrize("name, pixels, tokens, positions, tiles, cross", [
    (QWEN_VL, 451_584, 576, 2304, 1, 0),      # 672 x 672 = 24 x 24 merged tokens of 28 px
    (QWEN_VL, 1_048_576, 1369, 5476, 1, 0),   # 1024 px rounds to 1036 = 37 x 28
    (QWEN_VL, 256, 4, 16, 1, 0),              # below min_pixels: scaled up to 56 x 56
    (GEMMA, 451_584, 256, 4096, 1, 0),        # always 896 px, pooled to 256
    (GEMMA, 4_194_304, 256, 4096, 1, 0),
    (SMOL, 2304, 1088, 17408, 17, 0),         # a 48 px picture is rescaled to 2048 px: 16 tiles + the global one
    (LLAMA_V, 2304, 1, 6432, 4, 6404),        # padded to 4 tiles of 1601 states (1608 positions in the tower)
])
def test_image_cost_per_kind(name, pixels, tokens, positions, tiles, cross):
    cost = image_cost(KNOWN_VISION[name], pixels)
    assert (cost.tokens, cost.tower_tokens, cost.tiles, cost.cross_tokens) == (tokens, positions, tiles, cross)


def test_a_larger_image_max_pixels_costs_more_where_the_processor_keeps_the_pixels():
    small, big = (vlm(data={"image_max_pixels": p}, lora={"vision": True}) for p in (200_704, 802_816))
    a, b = estimate(small, 24), estimate(big, 24)
    assert (a["vision"]["tokens_per_image"], b["vision"]["tokens_per_image"]) == (256, 1024)  # (448/28)^2, (896/28)^2
    assert b["breakdown"]["image_activations"] == pytest.approx(4 * a["breakdown"]["image_activations"])  # tower positions x 4
    assert b["peak_gib"] > a["peak_gib"] and not b["vision"]["fits_max_length"]  # 1024 image tokens leave no room in max_length 1024
    # A frozen tower keeps nothing for backward: only its forward working set beyond the language model's counts.
    frozen = [estimate(vlm(data={"image_max_pixels": p}), 24) for p in (200_704, 16_777_216)]
    assert frozen[0]["breakdown"]["image_activations"] == 0 < frozen[1]["breakdown"]["image_activations"]
    assert frozen[1]["peak_gib"] > frozen[0]["peak_gib"]
    # Gemma 3, SmolVLM and Llama 3.2 Vision resize every image to their own size: the pixels bound changes nothing.
    for name in (GEMMA, SMOL, LLAMA_V):
        low, high = (estimate(vlm(name, data={"image_max_pixels": p}, lora={"vision": True}), 24) for p in (200_704, 4_194_304))
        assert low["breakdown"] == high["breakdown"], name


def test_training_the_tower_adds_its_adapters_and_keeps_its_activations():
    frozen, trained = estimate(vlm(SMOL, method="lora"), 24), estimate(vlm(SMOL, method="lora", lora={"vision": True}), 24)
    # SmolVLM-256M's tower: 12 layers of q, k, v, out (768 -> 768), fc1 (768 -> 3072), fc2; the connector 12288 -> 576.
    per_layer = 4 * 16 * (768 + 768) + 2 * 16 * (768 + 3072)
    assert trained["lora_params"] - frozen["lora_params"] == 12 * per_layer + 16 * (12288 + 576)
    # Frozen, the tower keeps nothing for backward; its forward working set (2 rows x 17 tiles x 1024 positions x
    # (2h + 2I) values in bf16) ends before the language model runs, so only its excess over that step counts.
    b = frozen["breakdown"]
    working_set = 2 * 17408 * (2 * 768 + 2 * 3072) * 2 / GIB
    assert b["image_activations"] == pytest.approx(max(0.0, working_set - b["activations"] - b["logits"])) and b["image_activations"] > 0
    assert trained["breakdown"]["image_activations"] > 2 * b["image_activations"]
    ckpt_off = estimate(vlm(SMOL, method="lora", lora={"vision": True}, train={"gradient_checkpointing": False}), 24)
    assert ckpt_off["breakdown"]["image_activations"] > 4 * trained["breakdown"]["image_activations"]
    q_only = estimate(vlm(SMOL, method="lora", lora={"vision": True, "targets": ["q_proj"]}), 24)
    assert q_only["lora_params"] == 30 * 16 * (576 + 576) + 12 * 16 * (768 + 768)  # q_proj of the language model and the tower


def test_llama_vision_cross_attention_states_grow_with_the_batch_not_the_sequence():
    one, four = (estimate(vlm(LLAMA_V, train={"batch_size": b}), 80) for b in (1, 4))
    assert four["breakdown"]["image_activations"] == pytest.approx(4 * one["breakdown"]["image_activations"])
    # With checkpointing: per image 6404 states of width 4096, + one recomputed layer's keys (before and after their
    # norm) and values of width 8 x 128 and the rank-16 outputs of k_proj and v_proj; bf16.
    assert one["breakdown"]["image_activations"] == pytest.approx(6404 * (4096 + 3 * 1024 + 2 * 16) * 2 / GIB)
    longer = estimate(vlm(LLAMA_V, data={"max_length": 4096}, train={"batch_size": 1}), 80)
    assert longer["breakdown"]["image_activations"] == one["breakdown"]["image_activations"]
    assert one["vision"]["tokens_per_image"] == 1


# --- Local folders: the shape from config.json (and preprocessor_config.json) ----------------------------


def _outside_language_model(model) -> int:
    """Parameters of the tower and projector of a real model: all but the language model and the output head."""
    head = model.get_output_embeddings()
    inside = {id(p) for p in model.get_decoder().parameters()} | {id(p) for p in head.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in inside)


@pytest.mark.parametrize("arch, tokens, tiles", [("gemma3", 4, 1), ("idefics3", 4, 1)])
def test_a_tiny_local_vlm_is_read_from_its_folder(vlms, arch, tokens, tiles):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from studio.modeling.vision import lora_targets

    folder = vlms[arch]
    result = estimate(vlm(str(folder), method="lora", model={"dtype": "float32"}), 8)
    assert result["source"] == str(folder / "config.json") and "vision_tower" in result["breakdown"]
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    tower = _outside_language_model(model)
    assert result["vision"]["tower_params"] == tower > 0
    assert result["breakdown"]["vision_tower"] == pytest.approx(tower * 4 / GIB)  # float32 here
    processor = AutoProcessor.from_pretrained(folder)
    seq = getattr(processor, "image_seq_length", None) or processor.image_seq_len
    assert (result["vision"]["tokens_per_image"], result["vision"]["tiles_per_image"]) == (seq * tiles, tiles) == (tokens, tiles)
    # The adapters the estimate counts are the ones the studio puts on the model, with and without lora.vision.
    for on in (False, True):
        r = vlm(str(folder), method="lora", model={"dtype": "float32"}, lora={"rank": 4, "alpha": 8, "vision": on})
        fresh = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
        peft_model = get_peft_model(fresh, LoraConfig(r=4, lora_alpha=8, target_modules=lora_targets(fresh, r)))
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        assert estimate(r, 8)["lora_params"] == trainable, (arch, on)


def test_idefics3_tiles_come_from_the_folders_processor(vlms, tmp_path):
    import shutil

    folder = tmp_path / "idefics3"
    shutil.copytree(vlms["idefics3"], folder)
    assert estimate(vlm(str(folder), method="lora"), 8)["vision"]["tiles_per_image"] == 1  # do_image_splitting: false
    for name in ("preprocessor_config.json", "processor_config.json"):  # the Hub's file, or what transformers 5 saves
        (folder / name).unlink(missing_ok=True)
    # Without it, Idefics3's default: split, longest edge 4 tiles of 32 px -> 4 x 4 + 1 global tile of 4 tokens each.
    assert estimate(vlm(str(folder), method="lora"), 8)["vision"]["tokens_per_image"] == 17 * 4


# --- studio estimate ------------------------------------------------------------------------------


def test_studio_estimate_prints_the_tower_and_image_tokens():
    from studio.cli.commands import run_estimate

    code, text = run_estimate("smolvlm/256m-lora", "8GB", [], False)
    assert code == 0
    assert "vision_tower" in text and "image_activations" in text
    assert "vision tower: 94M parameters, kept 16-bit, frozen" in text
    assert "image tokens: 1088 in the sequence; 17408 tower positions (17 tiles) per image" in text
    assert "warning" not in text
    code, text = run_estimate("smolvlm/256m-lora", "8GB", ["data.max_length=512", "lora.vision=true"], False)
    assert "adapted (lora.vision)" in text and "1088 tokens do not fit data.max_length=512" in text
    code, text = run_estimate("llama3.2-vision/11b-qlora", "16GB", [], False)
    assert "1 in the sequence, 6404 image states for cross-attention" in text
    _, text = run_estimate("qwen2.5/0.5b-qlora", "8GB", [], False)
    assert "vision" not in text and "image" not in text

"""The memory estimator: published peers' measurements, exact structure on tiny models, fitting, sharding, CLI."""

import json

import pytest
import torch

from studio.config.load import load_recipe
from studio.config.validate import validate_recipe
from studio.errors import StudioError
from studio.memory.fit import auto_fit, estimate_sharded, gpus_needed
from studio.memory.formula import estimate
from studio.memory.gpus import GIB, parse_gpu
from studio.memory.shapes import KNOWN_CONFIGS
from studio.ui.tabs.recipe import format_estimate

QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
LLAMA8B = "meta-llama/Llama-3.1-8B-Instruct"
ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def recipe(**sections):
    raw = {"model": {"name": QWEN}, "method": "qlora", "data": {"max_length": 512}, "train": {"batch_size": 4}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return validate_recipe(raw)


# --- Published measurements -------------------------------------------------------------------
#
# torchtune README, "Memory and training speed" (github.com/pytorch/torchtune, README.md, Sept 2024):
# "all the below numbers are provided for batch size 2 (without gradient accumulation), a dataset packed to
# sequence length 2048, and torch compile enabled": Llama 3.1 8B LoRA on 1x 4090: 16.2 GiB; QLoRA: 7.4 GiB.
# The configs are recipes/configs/llama3_1/8B_lora_single_device.yaml (rank 8, alpha 16,
# lora_attn_modules [q_proj, v_proj, output_proj], apply_lora_to_mlp True, apply_lora_to_output False,
# enable_activation_checkpointing True, dtype bf16) and 8B_qlora_single_device.yaml (the same with k_proj
# added: [q_proj, v_proj, k_proj, output_proj], NF4 base). torchtune logs torch.cuda memory stats (no
# CUDA context), so they are compared with `allocated_gib`, what torch.cuda.max_memory_allocated reports.


def torchtune(method, targets):
    return validate_recipe({
        "model": {"name": LLAMA8B, "dtype": "bfloat16"}, "method": method,
        "lora": {"rank": 8, "alpha": 16, "targets": targets},
        "data": {"max_length": 2048, "packing": True},
        "train": {"batch_size": 2, "grad_accum": 1, "gradient_checkpointing": True},
    })


def test_torchtune_llama31_8b_qlora_7_4_gib():
    result = estimate(torchtune("qlora", ALL7), 24)
    assert result["allocated_gib"] == pytest.approx(7.4, rel=0.15)


def test_torchtune_llama31_8b_lora_16_2_gib():
    result = estimate(torchtune("lora", ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]), 24)
    assert result["allocated_gib"] == pytest.approx(16.2, rel=0.15)


def test_unsloth_llama31_8b_qlora_minimum_6_gb():
    # Unsloth requirements page (unsloth.ai/docs/get-started/fine-tuning-for-beginners/unsloth-requirements):
    # 8B, "QLoRA (4-bit) VRAM 6 GB", "the absolute minimum". Unsloth's notebooks print that figure as
    # torch.cuda.max_memory_reserved() / 1024**3 labelled "GB", so it is compared with `reserved_gib`.
    # Settings of Unsloth's Llama-3.1-8B notebook at its smallest: r=16 on all 7 projections, batch 1,
    # gradient checkpointing with the layer inputs offloaded to CPU (use_gradient_checkpointing="unsloth"),
    # Alpaca-length rows (512 tokens).
    r = validate_recipe({
        "model": {"name": LLAMA8B}, "method": "qlora", "lora": {"rank": 16, "alpha": 16, "targets": "all-linear"},
        "data": {"max_length": 512}, "train": {"batch_size": 1, "gradient_checkpointing": True, "offload_activations": True},
    })
    assert estimate(r, 8)["reserved_gib"] == pytest.approx(6.0, rel=0.15)


# --- Structure, exact on tiny models ----------------------------------------------------------

TINY = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 3, "intermediate_size": 160, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False}


def tiny_model(dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**TINY)).to(dtype)


def tensor_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
        b.numel() * b.element_size() for name, b in module.named_buffers() if not name.endswith("inv_freq"))


@pytest.mark.parametrize("dtype,name", [(torch.float32, "float32"), (torch.bfloat16, "bfloat16")])
def test_lora_weights_term_is_the_models_bytes(dtype, name):
    result = estimate(recipe(method="lora", model={"dtype": name}), 8, model_config=TINY)
    model = tiny_model(dtype)
    assert result["breakdown"]["weights"] * GIB == tensor_bytes(model)
    assert result["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("double_quant", [True, False])
def test_qlora_weights_term_is_the_quantized_models_bytes(double_quant):
    from studio_kernels.modules import QuantLinear

    model = tiny_model()
    for layer in model.model.layers:  # quantize_onto, with double_quant chosen
        for parent in (layer.self_attn, layer.mlp):
            for child, linear in list(parent.named_children()):
                if isinstance(linear, torch.nn.Linear):
                    setattr(parent, child, QuantLinear.from_linear(linear, compute_dtype=torch.float32, double_quant=double_quant))
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == 3 * 7
    r = recipe(model={"dtype": "float32"}, quant={"double_quant": double_quant, "compute_dtype": "float32"})
    assert estimate(r, 8, model_config=TINY)["breakdown"]["weights"] * GIB == tensor_bytes(model)


def test_qlora_weights_match_studio_quantize_onto():
    from studio.modeling.loading import quantize_onto

    model = tiny_model()
    assert quantize_onto(model, torch.device("cpu"), torch.float32) == 3 * 7
    r = recipe(model={"dtype": "float32"}, quant={"compute_dtype": "float32"})
    assert estimate(r, 8, model_config=TINY)["breakdown"]["weights"] * GIB == tensor_bytes(model)


@pytest.mark.parametrize("method,targets", [("lora", "all-linear"), ("lora", ["q_proj", "v_proj"]), ("dora", ["o_proj", "down_proj"]), ("qlora", "all-linear")])
def test_lora_params_equal_peft_trainable_params(method, targets):
    from peft import LoraConfig, get_peft_model

    r = recipe(method=method, lora={"rank": 8, "alpha": 16, "targets": targets})
    result = estimate(r, 8, model_config=TINY)
    model = get_peft_model(tiny_model(), LoraConfig(r=8, lora_alpha=16, target_modules=targets, use_dora=method == "dora"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert result["lora_params"] == trainable
    b = result["breakdown"]
    size = 2 if method == "qlora" else 4  # lora.dtype auto: a QLoRA adapter trains in bf16 with bf16 compute
    assert (b["lora"], b["gradients"], b["optimizer"]) == pytest.approx((size * trainable / GIB, size * trainable / GIB, 2 * size * trainable / GIB))
    fp32 = estimate(recipe(method=method, lora={"rank": 8, "alpha": 16, "targets": targets, "dtype": "float32"}), 8, model_config=TINY)["breakdown"]
    assert (fp32["lora"], fp32["optimizer"]) == pytest.approx((4 * trainable / GIB, 8 * trainable / GIB))


def test_saved_activations_match_what_autograd_keeps():
    """Without checkpointing, the tensors autograd saves in a forward pass are the formula's values per token."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    batch, length = 2, 40
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.base_model.model.model(input_ids=torch.randint(0, 1000, (batch, length)))
    r = recipe(method="lora", model={"dtype": "float32"}, lora={"rank": 4, "alpha": 8}, data={"max_length": length}, train={"batch_size": batch})
    result = estimate(r, 8, model_config=TINY)
    expected = batch * length * result["saved_values_per_token"] * 4
    assert sum(saved.values()) == pytest.approx(expected, rel=0.03)


def test_checkpointing_and_offload_lower_activations():
    plain = estimate(recipe(), 24)
    ckpt = estimate(recipe(train={"gradient_checkpointing": True}), 24)
    off = estimate(recipe(train={"gradient_checkpointing": True, "offload_activations": True}), 24)
    assert off["breakdown"]["activations"] < ckpt["breakdown"]["activations"] < plain["breakdown"]["activations"] / 4
    assert off["cpu_offload_gib"] > 0 == ckpt["cpu_offload_gib"]
    assert off["peak_gib"] < ckpt["peak_gib"] < plain["peak_gib"]


def test_memory_grows_with_batch_length_and_rank():
    small, big = estimate(recipe(train={"batch_size": 2}), 24), estimate(recipe(train={"batch_size": 8}), 24)
    assert big["peak_gib"] > small["peak_gib"]
    assert big["breakdown"]["activations"] == pytest.approx(4 * small["breakdown"]["activations"])
    assert estimate(recipe(data={"max_length": 2048}), 24)["peak_gib"] > estimate(recipe(), 24)["peak_gib"]
    assert estimate(recipe(lora={"rank": 64, "alpha": 64}), 24)["lora_params"] == 4 * estimate(recipe(lora={"rank": 16}), 24)["lora_params"]
    fewer = estimate(recipe(lora={"targets": ["q_proj", "v_proj"]}), 24)
    assert 0 < fewer["lora_params"] < estimate(recipe(), 24)["lora_params"]


def test_qlora_needs_less_than_lora():
    qlora, lora = estimate(recipe(method="qlora"), 24), estimate(recipe(method="lora"), 24)
    assert qlora["breakdown"]["weights"] < lora["breakdown"]["weights"] / 2
    assert qlora["peak_gib"] < lora["peak_gib"]


def test_full_logits_cost_more_than_chunked_and_fused():
    r = recipe(model={"name": LLAMA8B}, data={"max_length": 2048}, train={"batch_size": 2})
    full, chunked, fused = (estimate(r, 24, loss=k)["breakdown"]["logits"] for k in ("full", "chunked", "fused"))
    assert full == pytest.approx(4096 * 128256 * 10 / GIB)
    assert fused < chunked < full / 10
    assert estimate(recipe(train={"fused_loss": True}), 24)["loss"] == "fused"


def test_breakdown_sums_to_peak_and_fit_search_is_consistent():
    result = estimate(recipe(), 8)
    assert result["known"] and {"weights", "lora", "gradients", "optimizer", "activations", "logits", "overhead"} == set(result["breakdown"])
    assert result["peak_gib"] == pytest.approx(sum(result["breakdown"].values()))
    assert result["allocated_gib"] < result["reserved_gib"] < result["peak_gib"]
    assert result["fits"] is (result["peak_gib"] <= 8) and estimate(recipe(), 0.5)["fits"] is False
    assert result["params"] == KNOWN_CONFIGS[QWEN].params
    top = result["max_batch_size"]
    assert estimate(recipe(train={"batch_size": top}), 8)["fits"] and not estimate(recipe(train={"batch_size": top + 1}), 8)["fits"]
    longest = result["max_length"]
    assert estimate(recipe(data={"max_length": longest}), 8)["fits"] and not estimate(recipe(data={"max_length": longest + 1}), 8)["fits"]
    json.dumps(result)  # the UI's API returns it as JSON


@pytest.mark.parametrize("text,gib", [("8GB", 8.0), ("24 GB", 24.0), ("80gib", 80.0), (12.5, 12.5), ("RTX 4090", 24.0), ("rtx-3060", 12.0),
                                      ("A100-80GB", 80.0), ("a100 40gb", 40.0), ("H100", 79.6), ("T4", 15.0), ("NVIDIA L4", 22.5)])
def test_gpu_sizes_and_names(text, gib):
    assert parse_gpu(text) == pytest.approx(gib)


def test_unknown_gpu_is_a_studio_error():
    with pytest.raises(StudioError, match="unknown GPU"):
        parse_gpu("Voodoo 3")
    with pytest.raises(StudioError):
        parse_gpu(-1)


# --- Fitting ----------------------------------------------------------------------------------


def test_auto_fit_keeps_the_effective_batch_and_fits():
    r = recipe(model={"name": LLAMA8B}, data={"max_length": 2048}, train={"batch_size": 8, "grad_accum": 2})
    assert not estimate(r, 12)["fits"]
    fitted, info = auto_fit(r, "RTX 3060")
    assert estimate(fitted, 12)["fits"] and info["estimate"]["fits"]
    assert fitted.train.batch_size * fitted.train.grad_accum == 16
    assert fitted.train.batch_size < 8 and "train.batch_size" in info["changes"]
    assert fitted.lora == r.lora and fitted.data == r.data  # only training settings change


def test_auto_fit_turns_on_checkpointing_then_offload_only_when_needed():
    r = recipe(model={"name": LLAMA8B}, data={"max_length": 8192}, train={"batch_size": 1, "grad_accum": 4})
    fitted, info = auto_fit(r, 12)
    assert fitted.train.gradient_checkpointing and not fitted.train.offload_activations
    assert fitted.train.batch_size * fitted.train.grad_accum == 4
    long = recipe(model={"name": LLAMA8B}, data={"max_length": 24576}, train={"batch_size": 1})
    fitted_long, _ = auto_fit(long, 16)
    assert fitted_long.train.gradient_checkpointing and fitted_long.train.offload_activations
    same, info = auto_fit(recipe(), 80)
    assert same == recipe() and info["changes"] == {}


def test_auto_fit_says_which_setting_to_change():
    r = recipe(model={"name": LLAMA8B}, method="lora", data={"max_length": 2048})
    with pytest.raises(StudioError) as err:
        auto_fit(r, "8GB")
    assert err.value.where == "method" and "qlora" in err.value.fix
    too_long = recipe(model={"name": LLAMA8B}, data={"max_length": 1_000_000})
    with pytest.raises(StudioError) as err:
        auto_fit(too_long, 8)
    assert err.value.where == "data.max_length" and "lower data.max_length" in err.value.fix


# --- Beyond one GPU ---------------------------------------------------------------------------


def big(name):
    return recipe(model={"name": name}, data={"max_length": 2048}, train={"batch_size": 1, "gradient_checkpointing": True})


def test_gpus_needed_for_70b_405b_and_deepseek_v3():
    assert gpus_needed(big(LLAMA8B), "24GB") == 1
    n70 = gpus_needed(big("meta-llama/Llama-3.1-70B-Instruct"), "24GB")
    assert 2 <= n70 <= 8
    n405 = gpus_needed(big("meta-llama/Llama-3.1-405B-Instruct"), "80GB")
    # torchtune ran Llama 3.1 405B QLoRA on 8x A100 80GB (README table): it must not need more than that.
    assert 3 <= n405 <= 8
    v3 = big("deepseek-ai/DeepSeek-V3")
    assert estimate(v3, 80)["params"] == pytest.approx(671e9, rel=0.01)  # MoE: 671B in total
    n_v3 = gpus_needed(v3, "80GB")
    assert n405 < n_v3 <= 16
    per_gpu = estimate_sharded(v3, 80, n_v3)
    assert per_gpu["fits"] and not estimate_sharded(v3, 80, n_v3 - 1)["fits"]
    one, two = estimate_sharded(v3, 80, 8), estimate_sharded(v3, 80, 16)
    assert two["breakdown"]["weights"] == pytest.approx(one["breakdown"]["weights"] / 2)
    assert two["breakdown"]["activations"] == one["breakdown"]["activations"]  # not sharded


def test_gpus_needed_refuses_when_activations_alone_do_not_fit():
    r = recipe(model={"name": "meta-llama/Llama-3.1-405B-Instruct"}, data={"max_length": 32768}, train={"batch_size": 4})
    with pytest.raises(StudioError, match="any count"):
        gpus_needed(r, "24GB")


# --- Shapes from disk ---------------------------------------------------------------------------


def test_config_json_from_a_local_dir(tmp_path):
    config = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    from_dir = estimate(recipe(model={"name": str(tmp_path)}), 8)
    given = estimate(recipe(), 8, model_config=config)
    assert from_dir["source"].endswith("config.json")
    assert from_dir["params"] == given["params"] == 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128) + 2 * 1000 * 64 + 2 * 2 * 64 + 64


def test_gguf_metadata_gives_the_same_shape(tmp_path):
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "tiny.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_embedding_length(64)
    writer.add_block_count(3)
    writer.add_feed_forward_length(160)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_vocab_size(1000)
    writer.add_tensor("token_embd.weight", np.zeros((1000, 64), dtype=np.float32))
    writer.add_tensor("output.weight", np.zeros((1000, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    from_gguf = estimate(recipe(model={"name": str(path)}), 8)
    assert from_gguf["source"] == str(path)
    assert from_gguf["breakdown"] == estimate(recipe(), 8, model_config=TINY)["breakdown"]


def test_every_shipped_recipe_has_an_estimate():
    from studio.config.shipped import shipped_recipe, shipped_recipes

    for name in shipped_recipes():
        result = estimate(load_recipe(shipped_recipe(name)), 24)
        assert result["known"], name
        assert 0.5 < result["peak_gib"] < 200, name
        assert "Peak" in format_estimate(result)


def test_unknown_model_says_so():
    result = estimate(recipe(model={"name": "someone/unknown-model"}), 8)
    assert result["known"] is False and result["peak_gib"] is None
    assert "unknown" in format_estimate(result)


# --- studio estimate ----------------------------------------------------------------------------


def test_run_estimate_table_and_json(tmp_path):
    from studio.cli.commands import run_estimate
    from studio.config.yaml_text import dump_recipe

    path = tmp_path / "r.yaml"
    path.write_text(dump_recipe(recipe(model={"name": LLAMA8B}, data={"max_length": 2048}, train={"batch_size": 2, "gradient_checkpointing": True})))
    code, text = run_estimate(str(path), "24GB", [], False)
    assert code == 0 and "fits 24 GiB: yes" in text and "largest train.batch_size" in text
    code, text = run_estimate(str(path), "8GB", ["method=lora"], True)
    data = json.loads(text)
    assert code == 1 and data["fits"] is False and data["peak_gib"] == pytest.approx(sum(data["breakdown"].values()))
    assert data["gpus_needed"] >= 2 and data["method"] == "lora"
    code, text = run_estimate(str(path), "RTX 3060", ["train.batch_size=32", "train.gradient_checkpointing=false"], False)
    assert code == 1 and "--set train.batch_size=" in text and "--set train.gradient_checkpointing=true" in text
    code, text = run_estimate(str(path), "8GB", ["method=lora"], False)
    assert code == 1 and "GPUs of 8 GiB needed, sharded (FSDP) lora: " in text
    with pytest.raises(StudioError):
        run_estimate(str(path), "8GB", ["model.name=someone/unknown"], False)


def test_estimate_subcommand_parses():
    import argparse

    from studio.cli.commands import cmd_estimate
    from studio.cli.parser import add_estimate_parser

    parser = argparse.ArgumentParser()
    add_estimate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["estimate", "r.yaml", "--gpu", "RTX 4090", "--set", "train.batch_size=2", "--json"])
    assert (args.recipe, args.gpu, args.overrides, args.json) == ("r.yaml", "RTX 4090", ["train.batch_size=2"], True)
    assert callable(cmd_estimate)


def test_a_sharded_run_is_checked_per_gpu_before_loading():
    """`studio train` on GPUs with strategy fsdp: the verdict uses each GPU's share and names the count that fits."""
    from studio.memory.fit import check_fits_sharded

    def sharded(name, gpus):
        return recipe(model={"name": name}, data={"max_length": 2048}, train={"batch_size": 1, "gradient_checkpointing": True},
                      distributed={"strategy": "fsdp", "num_processes": gpus})

    needed = gpus_needed(big("meta-llama/Llama-3.1-70B-Instruct"), "24GB")
    assert check_fits_sharded(sharded("meta-llama/Llama-3.1-70B-Instruct", needed), "24GB")["fits"]
    with pytest.raises(StudioError) as err:
        check_fits_sharded(sharded("meta-llama/Llama-3.1-70B-Instruct", needed - 1), "24GB")
    assert f"on each of its {needed - 1} GPUs" in err.value.what and f"--gpus {needed}" in err.value.fix
    assert check_fits_sharded(recipe(model={"name": "/nowhere/unknown-model"}, distributed={"strategy": "fsdp", "num_processes": 2}), "24GB") is None


def test_offloaded_embeddings_leave_the_gpu_estimate_and_auto_fit_uses_them_before_activation_offload():
    base = recipe(model={"name": LLAMA8B}, data={"max_length": 2048}, train={"batch_size": 1, "gradient_checkpointing": True, "fused_loss": True})
    off = recipe(model={"name": LLAMA8B}, data={"max_length": 2048}, train={"batch_size": 1, "gradient_checkpointing": True, "fused_loss": True, "offload_embeddings": True})
    a, b = estimate(base, 8), estimate(off, 8)
    table = 128256 * 4096 * 2 / GIB  # Llama 3.1's untied input table in bf16
    assert a["breakdown"]["weights"] - b["breakdown"]["weights"] == pytest.approx(table)
    assert b["cpu_offload_gib"] - a["cpu_offload_gib"] == pytest.approx(table)
    tied = recipe(train={"offload_embeddings": True})  # Qwen2.5-0.5B ties its table to the head: nothing moves
    assert estimate(tied, 8)["breakdown"]["weights"] == estimate(recipe(), 8)["breakdown"]["weights"]
    # A GPU between the two estimates: the embedding table alone makes the run fit, activations stay put.
    gpu = (a["peak_gib"] + b["peak_gib"]) / 2
    fitted, info = auto_fit(base, gpu)
    assert fitted.train.offload_embeddings and not fitted.train.offload_activations
    assert info["changes"] == {"train.offload_embeddings": (False, True)}


def test_the_gpu_is_sized_by_its_free_memory_not_its_total(monkeypatch):
    """On a GPU that a class or other jobs share, only what is free can hold this run."""
    import subprocess

    from studio.memory.gpus import CUDA_CONTEXT_GIB, GIB, detect_gpu_gib

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # This process already has a CUDA context: asked here; the free figure excludes that context, which the
    # estimate counts again, so it is added back.
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(5.5 * GIB), 24 * GIB))
    assert detect_gpu_gib() == 5.5 + CUDA_CONTEXT_GIB
    # No context yet: a child process answers, so this one does not hold GPU memory for the rest of its life.
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    asked = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: asked.append(cmd) or subprocess.CompletedProcess(cmd, 0, f"{3 * GIB}\n", ""))
    assert detect_gpu_gib() == 3 + CUDA_CONTEXT_GIB and "mem_get_info" in asked[0][-1]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert detect_gpu_gib() is None

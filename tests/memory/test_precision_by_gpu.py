"""The estimate follows the precision "auto" picks on the GPU: pre-Ampere cards train fp16 with an fp32 adapter."""

from __future__ import annotations

import pytest

from studio.config.load import load_recipe
from studio.memory.fit import auto_fit
from studio.memory.formula import estimate
from studio.memory.gpus import computes_bf16

QLORA = {"model": {"name": "meta-llama/Llama-3.2-1B-Instruct"}, "method": "qlora", "train": {"batch_size": 1}, "data": {"max_length": 512}}


@pytest.mark.parametrize("gpu,bf16", [("T4", False), ("V100-16GB", False), ("Tesla T4", False), ("RTX 4090", True), ("A100-80GB", True), ("16GB", True), (16, True)])
def test_which_gpus_compute_auto_in_bf16(gpu, bf16):
    assert computes_bf16(gpu) is bf16


def test_a_t4_counts_an_fp32_adapter_where_an_ampere_card_counts_bf16():
    recipe = load_recipe(QLORA)
    t4, ampere = estimate(recipe, "T4"), estimate(recipe, "16GB")  # same memory budget, different precision
    assert t4["bf16"] is False and ampere["bf16"] is True
    for term in ("lora", "gradients", "optimizer"):
        assert t4["breakdown"][term] == pytest.approx(2 * ampere["breakdown"][term])  # 4 bytes per value, not 2
    assert t4["peak_gib"] > ampere["peak_gib"]
    # An explicit lora.dtype is what it says, on any card.
    pinned = load_recipe({**QLORA, "lora": {"dtype": "bfloat16"}})
    assert estimate(pinned, "T4")["breakdown"]["lora"] == pytest.approx(ampere["breakdown"]["lora"])


def test_auto_fit_on_a_t4_fits_what_the_t4_really_trains():
    recipe = load_recipe({**QLORA, "train": {"batch_size": 8}})
    _, info = auto_fit(recipe, "T4")
    assert info["estimate"]["bf16"] is False and info["estimate"]["fits"]

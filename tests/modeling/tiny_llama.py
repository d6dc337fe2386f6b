"""A tiny random Llama and a few-step LoRA training loop shared by the integration tests."""

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_config() -> LlamaConfig:
    """hidden 64, 2 layers, vocab 256: big enough for every Llama code path, fast on CPU."""
    return LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_config()).eval()


def lora_config(**overrides) -> LoraConfig:
    kwargs = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS)
    kwargs.update(overrides)
    return LoraConfig(**kwargs)


def batches(steps: int = 5, batch: int = 2, seq: int = 24):
    """The same random batch every step: memorising it makes the loss fall measurably in 5 steps."""
    ids = torch.randint(0, 256, (batch, seq), generator=torch.Generator().manual_seed(123))
    return [ids] * steps


def train(model, config: LoraConfig, steps: int = 5, lr: float = 1e-2):
    """Wrap `model` with LoRA (seeded init) and run a plain AdamW loop; returns (peft model, losses)."""
    torch.manual_seed(7)
    peft_model = get_peft_model(model, config)
    for name, module in peft_model.named_modules():
        # peft starts B at zero; a non-zero B makes step-0 losses exercise the adapter path too
        if name.endswith("lora_B.default"):
            torch.nn.init.normal_(module.weight, std=0.02)
    peft_model.train()
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for ids in batches(steps):
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return peft_model, losses

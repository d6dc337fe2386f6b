"""Does a written GGUF compute what the merged model does? A round trip through an independent reader.

The GGUF is loaded back with transformers' `gguf_file=` loader (its own tensor-name map, its own inverse
of the llama rotary reorder, its own tokenizer builder) and compared with the merged safetensors model on
probe texts rendered with the training chat template:

- top-1 agreement: the share of positions, over every position of every text, where both models
  predict the same next token;
- mean KL(merged || gguf) over the same positions, in nats;
- the GGUF's tokenizer must encode every text to the merged tokenizer's ids.

Gemma 3 note: transformers' GGUF reader does not read a Gemma 3 file's attention scale or its
sliding/full layer pattern and falls back to class defaults (scale 1/sqrt(256), every 6th layer
full). The round trip fills both from the file the way llama.cpp does (scale 1/sqrt(key_length),
the written layer pattern), so the check still judges the file and not the reader's gaps.
"""

from __future__ import annotations

from pathlib import Path

from studio.errors import StudioError


def load_gguf(gguf_path: Path, notes: list[str] | None = None) -> tuple[object, object]:
    """(model, tokenizer) read back from a written GGUF by transformers' reader; a StudioError when it cannot be read."""
    from transformers import AutoTokenizer

    try:
        model = load_gguf_model(gguf_path, notes)
        gguf_tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except (ValueError, KeyError, NotImplementedError, OSError, RuntimeError) as exc:
        raise StudioError(f"the written GGUF cannot be read back: {type(exc).__name__}: {exc}", where=str(gguf_path), fix="report this with the run directory") from None
    return model, gguf_tok


def compare_with_gguf(merged, tokenizer, gguf_path: Path, texts: list[str], max_length: int, loaded: tuple | None = None) -> dict:
    """Compare next-token distributions and token ids of the merged model and the GGUF read back by transformers.

    `loaded`: the GGUF's (model, tokenizer) from `load_gguf` when the caller reads the file once for other checks too.
    """
    import torch

    notes: list[str] = []
    model, gguf_tok = loaded if loaded is not None else load_gguf(gguf_path, notes)
    tokenizer_match = True
    agree = total = 0
    kl_sum, kl_max = 0.0, 0.0
    device = next(merged.parameters()).device
    for text in texts:
        for special in (False, True):
            ids = tokenizer(text, add_special_tokens=special)["input_ids"]
            if gguf_tok(text, add_special_tokens=special)["input_ids"] != ids:
                tokenizer_match = False
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
        batch = torch.tensor([ids], device=device)
        with torch.no_grad():
            p = merged(input_ids=batch).logits.float().log_softmax(-1)[0]
            q = model(input_ids=batch.to(next(model.parameters()).device)).logits.float().log_softmax(-1)[0].to(p.device)
        kl = (p.exp() * (p - q)).sum(-1).clamp_min(0.0)
        agree += int((p.argmax(-1) == q.argmax(-1)).sum())
        total += len(ids)
        kl_sum += float(kl.sum())
        kl_max = max(kl_max, float(kl.max()))
    return {
        "top1": agree / max(total, 1),
        "mean_kl": kl_sum / max(total, 1),
        "max_kl": kl_max,
        "positions": total,
        "tokenizer_match": tokenizer_match,
        "notes": notes,
    }


def load_gguf_model(gguf_path: Path, notes: list[str] | None = None):
    """A GGUF file loaded (dequantized to float32) by transformers, with the Gemma 3 settings its reader skips filled from the file."""
    import gguf
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if config.model_type == "gemma3_text":
        fields = gguf.GGUFReader(str(gguf_path)).fields
        key_length = fields["gemma3.attention.key_length"].contents()
        config.query_pre_attn_scalar = key_length  # llama.cpp scales scores by 1/sqrt(key_length)
        pattern = fields.get("gemma3.attention.sliding_window_pattern")
        if pattern is not None:
            config.layer_types = ["sliding_attention" if flag else "full_attention" for flag in pattern.contents()]
        if notes is not None:
            notes.append("gemma3: attention scale and layer pattern taken from the file (transformers' reader skips them)")
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, config=config, dtype=torch.float32).eval()

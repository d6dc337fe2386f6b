"""Write a merged Hugging Face model as one GGUF file that llama.cpp and Ollama run.

What goes in the file, and why:

- Architecture metadata under the llama.cpp names (`{arch}.block_count`, `{arch}.attention.head_count`, ...).
  Mistral is written as `llama`: the two compute the same thing once the sliding window is off, which
  is how llama.cpp runs Mistral models too.
- Tensors renamed with gguf's own name map (`model.layers.3.self_attn.q_proj` -> `blk.3.attn_q`).
- Two layout changes where llama.cpp's graph differs from the transformers modules:

  * Llama rotary layout. transformers rotates the pair (x[i], x[i + d/2]) of each head ("rotate_half");
    llama.cpp's `llama` graph rotates adjacent pairs (x[2i], x[2i + 1]). The rows of `q_proj` and
    `k_proj` of every head are therefore reordered so that output row 2i is HF row i and row 2i + 1 is
    HF row i + d/2. Per head: view the d rows as (2, d/2), swap the axes to (d/2, 2), flatten. Since
    q.k is a sum over the same pairs in either order, attention scores are unchanged. (Qwen2 and
    Gemma 3 use the "neox" rotation in llama.cpp, which is transformers' layout: no reorder.) The
    K rows are reordered per KV head, so grouped-query attention keeps working.
  * Gemma RMSNorm computes x * (1 + w); llama.cpp's norm computes x * w, so Gemma norm weights are
    written as w + 1.

- Tokenizer: byte-level BPE (`tokenizer.ggml.model = gpt2`) with its tokens, token types (control
  for special added tokens), merges and a pre-tokenizer name chosen from the tokenizer's own
  pre-tokenizer; or a SentencePiece-style BPE with byte fallback (`llama`) with scores. Special ids
  (bos, eos = the end-of-turn token training taught the model to emit, pad, unk), the add-BOS flag,
  and the training chat template.
- Precision: f32, f16 or q8_0 for matrices; 1-D tensors (norms, biases) stay f32, and a matrix whose
  rows do not split into 32-value Q8_0 blocks falls back to f16.

A vision-language model (Gemma 3, Idefics3/SmolVLM) is written as its language model alone (`language_model_of`:
the decoder and head under a text model's names; Idefics3's text model is a llama); its vision tower and projector go
to the separate projector file (studio.export.mmproj).

The file is written to a temporary name and renamed by the caller once the round trip has passed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studio.errors import StudioError
from studio.export.formats import DEFAULT_QUANT, QUANTS

# transformers model_type -> (gguf architecture name, needs the llama Q/K reorder, norm weights stored as 1 + w)
ARCHITECTURES = {
    "llama": ("llama", True, False),
    "mistral": ("llama", True, False),
    "qwen2": ("qwen2", False, False),
    "gemma3_text": ("gemma3", False, True),
    "gemma3": ("gemma3", False, True),
}

# Pre-tokenizer split patterns of well-known byte-level BPE tokenizers -> llama.cpp's name for them.
_LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_KNOWN_SPLITS = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}


@dataclass
class GGUFInfo:
    """What was written: architecture, tensor count, precision, tokenizer kind and special ids."""

    arch: str
    tensors: int
    quant: str
    tokenizer: str
    eos_token_id: int
    bos_token_id: int | None
    add_bos: bool


def llama_rotary_reorder(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the rows of a q_proj/k_proj weight (or bias) from HF's half-split rotary layout to adjacent pairs.

    Within each head of d rows, new row 2i is old row i and new row 2i + 1 is old row i + d/2.
    """
    rows = weight.shape[0]
    head_dim = rows // n_heads
    if head_dim * n_heads != rows or head_dim % 2:
        raise StudioError(f"cannot reorder rotary rows: {rows} rows do not split into {n_heads} heads of even size", where="config.json", fix="report this model; its attention shapes are unusual")
    tail = weight.shape[1:]
    return weight.reshape(n_heads, 2, head_dim // 2, *tail).swapaxes(1, 2).reshape(weight.shape)


def write_gguf(model_dir: Path, path: Path, quant: str = DEFAULT_QUANT, name: str | None = None, model=None, tokenizer=None) -> GGUFInfo:
    """Write the model in model_dir (safetensors + tokenizer) to path as GGUF; return what was written.

    `model` and `tokenizer`, when given, are that folder already loaded (float32), to avoid a second load.
    """
    import gguf
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if quant not in QUANTS:
        raise StudioError(f"unknown GGUF precision '{quant}'", where="--quant", fix=f"use one of {', '.join(QUANTS)}")
    full = AutoConfig.from_pretrained(model_dir)
    config = getattr(full, "text_config", None) or full
    spec = ARCHITECTURES.get(config.model_type)
    if spec is None:
        raise StudioError(
            f"GGUF export does not support the '{config.model_type}' architecture yet",
            where=str(model_dir / "config.json"),
            fix=f"supported: {', '.join(sorted({k for k in ARCHITECTURES if k != 'gemma3'}))}; use the merged safetensors folder instead",
        )
    arch_name, reorder, norm_plus_one = spec
    tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model_dir)
    if model is None and hasattr(full, "vision_config"):
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    if model is not None and hasattr(model.config, "vision_config"):
        model = language_model_of(model)  # a vision-language model's text GGUF holds its language model alone
        config = model.config  # its text config, with the tying the modules really have
    model = model if model is not None else AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    tied = bool(getattr(model.config, "tie_word_embeddings", False)) or bool(getattr(config, "tie_word_embeddings", False))

    writer = gguf.GGUFWriter(str(path), arch_name, use_temp_file=False)
    writer.add_type(gguf.GGUFType.MODEL)
    label = name or Path(model_dir).name
    # transformers reads a file named exactly "mistral" as a "mistral" architecture that gguf-py lacks, and fails.
    writer.add_name(label if label.lower() != "mistral" else f"{label}-merged")
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant])
    if quant == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _write_hparams(writer, config, arch_name)
    tok_info = _write_tokenizer(writer, tokenizer, config)

    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch_name)
    names = gguf.get_tensor_name_map(arch_enum, config.num_hidden_layers)
    count = 0
    for hf_name, value in state.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        if tied and hf_name == "lm_head.weight":
            continue  # the embedding doubles as the output layer; llama.cpp reuses token_embd
        base, _, suffix = hf_name.rpartition(".")
        gguf_base = names.get_name(base)
        if gguf_base is None:
            raise StudioError(f"no GGUF name for tensor {hf_name}", where=str(model_dir), fix="this model has layers the exporter does not know; report it")
        if reorder:
            if gguf_base.endswith(".attn_q"):
                value = llama_rotary_reorder(value, config.num_attention_heads)
            elif gguf_base.endswith(".attn_k"):
                value = llama_rotary_reorder(value, config.num_key_value_heads)
        if norm_plus_one and suffix == "weight" and gguf_base.endswith("norm"):
            value = value + 1.0
        _add_tensor(writer, f"{gguf_base}.{suffix}", value, quant)
        count += 1

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GGUFInfo(arch_name, count, quant, *tok_info)


def language_model_of(model):
    """The language model of a loaded vision-language model as a plain causal LM that shares its weights (nothing copied).

    The text GGUF of a vision run is written from it: its state dict names the language model's tensors as a text
    model's (`model.language_model.layers.0...` / `model.text_model.layers.0...` -> `model.layers.0...`), which
    gguf's name map knows. The decoder and the output head are the vision model's own modules, so the
    causal LM computes what the vision model computes on text (the round trip then compares the GGUF with it).
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    text_config = copy.deepcopy(model.config.text_config)
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    # Whether the head is the embedding matrix decides whether the GGUF gets an output tensor; read it off the modules.
    text_config.tie_word_embeddings = head.weight.data_ptr() == embeddings.weight.data_ptr()
    with torch.device("meta"):  # the shell only: its decoder and head are replaced by the vision model's below
        text = AutoModelForCausalLM.from_config(text_config)
    setattr(text, text.base_model_prefix, model.get_decoder())
    text.set_output_embeddings(head)
    left = [n for n, t in [*text.named_parameters(), *text.named_buffers()] if t.is_meta]
    if left:
        raise StudioError(f"the language model of this {model.config.model_type} model does not fit a {type(text).__name__}: {left[:3]} unset",
                          where="merged model", fix="report this model; its language model is laid out unusually")
    text.generation_config = model.generation_config
    return text.eval()


def _add_tensor(writer, name: str, value: np.ndarray, quant: str) -> None:
    import gguf

    value = np.ascontiguousarray(value, dtype=np.float32)
    if value.ndim <= 1 or quant == "f32":
        writer.add_tensor(name, value)
    elif quant == "q8_0" and value.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        packed = gguf.quants.quantize(value, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)  # shape is read from the packed bytes
    else:
        writer.add_tensor(name, value.astype(np.float16))


def _write_hparams(writer, config, arch_name: str) -> None:
    n_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(n_heads))
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or n_heads))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    writer.add_rope_dimension_count(int(head_dim))
    writer.add_rope_freq_base(float(_rope_theta(config)))
    if head_dim * n_heads != config.hidden_size or arch_name == "gemma3":
        writer.add_key_length(int(head_dim))
        writer.add_value_length(int(head_dim))
    scaling = _rope_scaling(config)
    if scaling and scaling.get("rope_type", scaling.get("type")) == "linear":
        import gguf

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    elif scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise StudioError(
            f"GGUF export does not handle rope scaling '{scaling.get('rope_type', scaling.get('type'))}' yet",
            where="config.json rope_scaling",
            fix="use the merged safetensors folder, or a model without long-context rope scaling",
        )
    if arch_name == "gemma3":
        if getattr(config, "sliding_window", None):
            writer.add_sliding_window(int(config.sliding_window))
        layer_types = getattr(config, "layer_types", None)
        if layer_types:
            writer.add_sliding_window_pattern([t == "sliding_attention" for t in layer_types])
        local_base = getattr(config, "rope_local_base_freq", None)
        if local_base:
            writer.add_rope_freq_base_swa(float(local_base))
        for key, add in (("final_logit_softcapping", writer.add_final_logit_softcapping), ("attn_logit_softcapping", writer.add_attn_logit_softcapping)):
            if getattr(config, key, None):
                add(float(getattr(config, key)))


def _rope_parameters(config) -> dict:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "full_attention" in params:
        params = params["full_attention"]
    return params if isinstance(params, dict) else {}


def _rope_theta(config) -> float:
    params = _rope_parameters(config)
    return params.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0


def _rope_scaling(config) -> dict | None:
    params = _rope_parameters(config)
    if params.get("rope_type") not in (None, "default"):
        return params
    scaling = getattr(config, "rope_scaling", None)
    return scaling if isinstance(scaling, dict) else None


def _write_tokenizer(writer, tokenizer, config) -> tuple[str, int, int | None, bool]:
    """Vocabulary, merges, special ids, flags and the chat template; returns (kind, eos, bos, add_bos)."""
    import gguf

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    model = data["model"]
    if model.get("type") != "BPE":
        raise StudioError(
            f"GGUF export supports BPE tokenizers only, not {model.get('type')}",
            where="tokenizer.json",
            fix="use the merged safetensors folder for this model",
        )
    vocab = tokenizer.get_vocab()
    size = max(int(config.vocab_size), max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for token, index in vocab.items():
        tokens[index] = token
        types[index] = gguf.TokenType.NORMAL
    for added in data.get("added_tokens", []):
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED

    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    byte_fallback = bool(model.get("byte_fallback"))
    if byte_fallback:
        kind = "llama"
        scores = [0.0] * size
        for token, index in vocab.items():
            scores[index] = -float(index)
            if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                types[index] = gguf.TokenType.BYTE
        if tokenizer.unk_token_id is not None:
            types[tokenizer.unk_token_id] = gguf.TokenType.UNKNOWN
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_add_space_prefix(_sentencepiece_space_prefix(data))
    else:
        kind = "gpt2"
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_pre_tokenizer_name(data.get("pre_tokenizer")))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)

    eos = tokenizer.eos_token_id
    if eos is None:
        raise StudioError("the tokenizer has no end-of-sequence token", where="tokenizer_config.json", fix="set eos_token in the merged model's tokenizer_config.json")
    bos = tokenizer.bos_token_id
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    add_bos = bos is not None and bool(probe) and probe[0] == bos
    add_eos = bool(probe) and probe[-1] == eos and len(probe) > 1
    writer.add_eos_token_id(int(eos))
    if bos is not None:
        writer.add_bos_token_id(int(bos))
    if tokenizer.pad_token_id is not None:
        writer.add_pad_token_id(int(tokenizer.pad_token_id))
    if tokenizer.unk_token_id is not None:
        writer.add_unk_token_id(int(tokenizer.unk_token_id))
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(add_eos)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()))
    if template:
        writer.add_chat_template(template)
    return kind, int(eos), None if bos is None else int(bos), add_bos


def _pre_tokenizer_name(pre: dict | None) -> str:
    """llama.cpp's name for how text is split before BPE: "gpt-2" for ByteLevel with its own regex, a known split, else "default"."""
    if not pre:
        return "default"
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    if pre.get("type") == "Sequence":
        for step in pre.get("pretokenizers", []):
            if step.get("type") == "Split":
                pattern = step.get("pattern", {}).get("Regex")
                if pattern in _KNOWN_SPLITS:
                    return _KNOWN_SPLITS[pattern]
            if step.get("type") == "ByteLevel" and step.get("use_regex", True):
                return "gpt-2"
    return "default"


def _sentencepiece_space_prefix(data: dict) -> bool:
    """Whether the SentencePiece tokenizer puts "▁" before the first word (Llama 2, Mistral do)."""
    text = json.dumps([data.get("normalizer"), data.get("pre_tokenizer")])
    return '"prepend_scheme": "always"' in text or '"Prepend"' in text or '"add_prefix_space": true' in text

"""Tiny random vision-language models, each saved with a processor made offline: built in seconds, loaded like real ones.

Two architectures with different image plumbing: Gemma 3 (a SigLIP tower pooled to a fixed number of soft tokens
between `<start_of_image>` and `<end_of_image>`, wrapped in blank lines that are ordinary text, and token_type_ids
for bidirectional attention over the image) and Idefics3, the architecture of SmolVLM (a fixed number of tokens per
image between `<fake_token_around_image>` markers, pixel values padded per batch). Qwen2-VL is left out: its
processor needs torchvision (for its video processor) in this transformers release. Each folder holds config.json,
safetensors weights, a byte-level BPE tokenizer trained in milliseconds (tests/helpers.py's recipe, plus the
architecture's image tokens) and the image processor with small sizes, so `model.name: <dir>` trains on a CPU.
"""

from __future__ import annotations

from pathlib import Path

from helpers import EOT, IM_START, REPO, _corpus, recipe_dict

VLM_ARCHITECTURES = ("gemma3", "idefics3")
SHAPES = REPO / "examples" / "shapes" / "train.jsonl"  # the drawn image dataset the vision tests train on

# Gemma 3's template, trimmed: `<start_of_turn>user` turns, the assistant called `model`, images as <start_of_image>.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

# SmolVLM's template: `User:<image>text<end_of_utterance>` turns, list content only.
IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

_GEMMA_TOKENS = [EOT, "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
_IDEFICS_TOKENS = [EOT, IM_START, "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>"] + [
    f"<row_{r}_col_{c}>" for r in range(1, 4) for c in range(1, 4)
]


def _tokenizer(special: list[str], eos: str, bos: str | None = None, named: dict | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    words = ["red", "green", "blue", "yellow", "circle", "square", "triangle", "What", "shape", "colour", "is", "this", "A"]
    corpus = _corpus() + [" ".join(words[(i + k) % len(words)] for k in range(6)) + " User: Assistant:" for i in range(50)]
    trainer = trainers.BpeTrainer(vocab_size=460, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=EOT, bos_token=bos, unk_token=None, extra_special_tokens=named or {})
    fast.add_special_tokens({"additional_special_tokens": special[1:]})
    return fast


def _text_config(tokenizer, **extra) -> dict:
    return dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=1024, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, bos_token_id=None, **extra)


def _gemma3():
    from transformers import Gemma3Config, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tokenizer = _tokenizer(_GEMMA_TOKENS, "<end_of_turn>", bos="<bos>",
                           named={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"})
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (("boi_token_index", "<start_of_image>"), ("eoi_token_index", "<end_of_image>"),
                                                                          ("image_token_index", "<image_soft_token>"))}
    text = {**_text_config(tokenizer), "model_type": "gemma3_text", "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 16,
            "layer_types": ["sliding_attention", "full_attention"], "bos_token_id": tokenizer.bos_token_id}
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8, vision_use_head=False)
    # (32 / 8)^2 = 16 patches, average-pooled to mm_tokens_per_image = 4 image tokens.
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, tie_word_embeddings=True, **ids)
    images = Gemma3ImageProcessorPil(size={"height": 32, "width": 32}, do_pan_and_scan=False)
    return config, Gemma3Processor(image_processor=images, tokenizer=tokenizer, image_seq_length=4, chat_template=GEMMA3_TEMPLATE)


def _idefics3():
    from transformers import Idefics3Config, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tokenizer = _tokenizer(_IDEFICS_TOKENS, "<end_of_utterance>")
    text = {"model_type": "llama", **_text_config(tokenizer), "tie_word_embeddings": False}
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    config = Idefics3Config(text_config=text, vision_config=vision, image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=2,
                            tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id)
    images = Idefics3ImageProcessorPil(size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False)
    # (32 / 8)^2 patches, merged 2x2 by the connector: 4 image tokens per image.
    return config, Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=4, chat_template=IDEFICS3_TEMPLATE)


def make_vlm_dir(path: Path, arch: str = "gemma3", seed: int = 0) -> Path:
    """Save a seeded random tiny VLM of `arch` (one of VLM_ARCHITECTURES) with its processor to `path`; return path."""
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    config, processor = {"gemma3": _gemma3, "idefics3": _idefics3}[arch]()
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    tok = processor.tokenizer
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    return path


def vision_recipe(model_dir, out_dir, data_path=SHAPES, **sections):
    """A validated recipe for a short LoRA run of a tiny VLM on `data_path` (8 steps of 4 rows; sections override)."""
    from studio.config.load import load_recipe

    sections = {"train": {"max_steps": 8, "batch_size": 4, "learning_rate": 5e-3, "save_steps": 4, **sections.pop("train", {})},
                "data": {"max_length": 96, **sections.pop("data", {})}, **sections}
    return load_recipe(recipe_dict(model_dir, data_path, out_dir, **sections))

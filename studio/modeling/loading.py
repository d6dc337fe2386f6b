"""Load the base model and tokenizer, quantize it for QLoRA, and attach LoRA adapters with peft.

Adapters are standard peft adapters: `PeftModel.from_pretrained(base, RUN_DIR/adapter)` loads them
without this project. Weights load from safetensors only; remote code runs only if the recipe allows it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from studio.config.schema import Recipe
from studio.errors import StudioError
from studio.modeling.quiet import quiet_libraries
from studio.modeling.source import resolve_model

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(choice: str = "auto") -> torch.device:
    """The training device: the recipe's choice, or the GPU when one is present."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise StudioError("train.device is cuda but no CUDA GPU is visible", where="train.device", fix="set train.device: auto (or cpu)")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def native_bf16() -> bool:
    """Whether the visible GPU computes in bfloat16 natively (Ampere or newer).

    Without including_emulation=False torch calls a pre-Ampere GPU (T4, V100, RTX 20xx) bf16-capable
    because it can hold bf16 tensors; its bf16 math is emulated and slow, so float16 is the choice there.
    """
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    """float32 on CPU (bf16 matmuls are slow there), bfloat16 on a GPU that supports it, unless set."""
    if choice != "auto":
        return _DTYPES[choice]
    if device.type == "cuda" and native_bf16():
        return torch.bfloat16
    return torch.float32 if device.type == "cpu" else torch.float16


def load_tokenizer(model_dir: Path, recipe: Recipe | None = None):
    """The base tokenizer, with the recipe's chat template (or ChatML fallback) and a pad token."""
    from transformers import AutoTokenizer

    from studio.data import prepare_tokenizer

    trust = bool(recipe and recipe.model.trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust)
    except (OSError, ValueError) as exc:
        raise StudioError(f"cannot load the tokenizer: {str(exc).splitlines()[0]}", where=str(model_dir), fix="the model folder needs tokenizer.json or its tokenizer files") from None
    return prepare_tokenizer(tokenizer, recipe.data.chat_template if recipe else None)


def load_base(model_dir: Path, dtype: torch.dtype, device: torch.device, trust_remote_code: bool = False, quantization_config=None, allow_pickle: bool = False):
    """The base model from safetensors, in eval mode (a vision-language model with its image-text-to-text head).
    Pickle (.bin) checkpoints are refused unless `allow_pickle`, and then transformers reads them with
    torch.load(weights_only=True)."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from studio.modeling.vision import is_vision_model

    quiet_libraries()
    safetensors = bool(list(Path(model_dir).glob("*.safetensors")))
    if not safetensors and not (allow_pickle and list(Path(model_dir).glob("*.bin"))):
        raise StudioError(f"no .safetensors weights in {model_dir}", where=str(model_dir), fix="convert pickle (.bin) checkpoints to safetensors first (they can run code when loaded), or set model.allow_pickle: true to load them with torch.load(weights_only=True)")
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code, "use_safetensors": safetensors}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    import pickle

    try:
        auto = AutoModelForImageTextToText if is_vision_model(model_dir) else AutoModelForCausalLM
        model = auto.from_pretrained(model_dir, **kwargs)
    except pickle.UnpicklingError as exc:
        raise StudioError(f"refused to load pickle weights that need more than tensors ({str(exc).splitlines()[0][:120]})", where=str(model_dir), fix="this file may run code when loaded; get safetensors weights from a trusted source") from None
    except (OSError, ValueError) as exc:
        raise StudioError(f"cannot load the model: {str(exc).splitlines()[0]}", where=str(model_dir), fix="check the model folder; architectures need a causal-LM head") from None
    if quantization_config is None:
        model.to(device)
    return model.eval()


def quant_backend(recipe: Recipe, device: torch.device | None = None) -> tuple[str, str]:
    """Which 4-bit implementation a QLoRA run on `device` (default: the recipe's) uses, and why.

    The recipe's choice; for `auto`, the studio's NF4 kernels when they import and can run fused on that
    device (a CPU always can: their torch reference is the CPU path; a GPU needs Triton), else
    bitsandbytes, with the reason (training prints it: a silent switch would change speed, memory and
    numerics without a word). `studio` with kernels that do not import is a StudioError.
    """
    chosen = recipe.quant.backend
    if chosen == "bitsandbytes":
        return "bitsandbytes", "quant.backend: bitsandbytes"
    try:
        import studio_kernels  # noqa: F401  (the package first: its submodules may be imported already)
        from studio_kernels.runtime import triton_available
        from studio_kernels.triton_import import missing_reason
    except ImportError as exc:
        problem = f"{type(exc).__name__}: {exc}"
        if chosen == "studio":
            raise StudioError(f"quant.backend is studio but the studio's NF4 kernels cannot be imported ({problem})", where="quant.backend",
                              fix="install the kernels package (`pip install ./kernels` in a checkout), or set quant.backend: bitsandbytes") from None
        return "bitsandbytes", f"quant.backend auto, and the studio's NF4 kernels cannot be imported: {problem}"
    if chosen == "studio":
        return "studio", "quant.backend: studio"
    device = device or pick_device(recipe.train.device)
    if device.type == "cuda" and not triton_available():
        return "bitsandbytes", f"quant.backend auto, and the studio's fused kernels need Triton on a GPU: {missing_reason()}"
    return "studio", "quant.backend auto: the studio's NF4 kernels"


def load_for_training(recipe: Recipe, device: torch.device):
    """Base model (quantized for QLoRA) with fresh LoRA adapters attached, and its tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import BitsAndBytesConfig, set_seed

    from studio.modeling.embedding_offload import offload_input_embeddings
    from studio.modeling.vision import check_vision_recipe, is_vision_model, kept_in_16_bit, load_processor, lora_targets

    model_dir = resolve_model(recipe.model.name, recipe.model.revision)
    vision = is_vision_model(model_dir)
    if recipe.lora.vision and not vision:
        raise StudioError("lora.vision adapts a vision tower, and this is a text-only model", where="lora.vision", fix="set lora.vision: false, or use a vision-language model")
    if vision:
        check_vision_recipe(recipe)
    # A vision-language model's "tokenizer" is its processor: it renders, tokenizes and turns images into pixels.
    tokenizer = load_processor(model_dir, recipe) if vision else load_tokenizer(model_dir, recipe)
    dtype = pick_dtype(recipe.model.dtype, device)
    backend = None
    if recipe.adapter_method == "qlora":
        backend, why = quant_backend(recipe, device)
        print(f"4-bit base weights: {backend} ({why})", file=sys.stderr, flush=True)
    quantized = 0
    if backend == "bitsandbytes":
        compute = pick_dtype(recipe.quant.compute_dtype, device)
        bnb = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=recipe.quant.type,
            bnb_4bit_use_double_quant=recipe.quant.double_quant,
            bnb_4bit_compute_dtype=compute,
            # FSDP shards only floating parameters of bitsandbytes' Params4bit (accelerate leaves uint8 ones
            # whole on every rank), so a sharded run stores the 4-bit bytes in the model's float dtype.
            bnb_4bit_quant_storage=dtype if recipe.distributed.strategy == "fsdp" else torch.uint8,
            # A vision-language model's tower, projector and head stay 16-bit (see studio.modeling.vision).
            llm_int8_skip_modules=kept_in_16_bit(model_dir, recipe.model.trust_remote_code) if vision else None,
        )
        model = load_base(model_dir, dtype, device, recipe.model.trust_remote_code, quantization_config=bnb, allow_pickle=recipe.model.allow_pickle)
    elif backend == "studio":
        # Loaded on the CPU, then moved to the device one block at a time as it is quantized, so the
        # GPU never holds more than one full-precision block: an 8B model fits where its bf16 copy would not.
        model = load_base(model_dir, dtype, torch.device("cpu"), recipe.model.trust_remote_code, allow_pickle=recipe.model.allow_pickle)
    else:
        model = load_base(model_dir, dtype, device, recipe.model.trust_remote_code, allow_pickle=recipe.model.allow_pickle)
    if recipe.train.offload_embeddings:  # for the studio backend before the move, so the table never reaches the GPU
        offload_input_embeddings(model)
    if backend == "studio":
        # Architectures whose projections are not nn.Linear (GPT-2's Conv1D) keep them in full
        # precision, as bitsandbytes does; LoRA then attaches to them as usual.
        quantized = quantize_onto(model, device, pick_dtype(recipe.quant.compute_dtype, device), scope=model.get_decoder() if vision else None)
    if recipe.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    set_seed(recipe.train.seed)  # adapter initialisation is seeded
    config = LoraConfig(
        r=recipe.lora.rank,
        lora_alpha=recipe.lora.alpha,
        lora_dropout=recipe.lora.dropout,
        target_modules=lora_targets(model, recipe) if vision else recipe.lora.targets,
        use_dora=recipe.adapter_method == "dora",
        bias="none",
        task_type="CAUSAL_LM",
    )
    if backend == "studio" and quantized:
        from studio.modeling.quant import register_studio_lora

        config = register_studio_lora(config, model)
    try:
        model = get_peft_model(model, config)
    except ValueError as exc:
        raise StudioError(f"cannot attach LoRA: {str(exc).splitlines()[0]}", where="lora.targets", fix="use all-linear, or module names that exist in this model (e.g. q_proj, v_proj)") from None
    return model, tokenizer, model_dir


def quantize_onto(model, device: torch.device, compute_dtype: torch.dtype, scope=None) -> int:
    """Quantize every linear layer of `scope` (default: the whole model) to NF4 block by block while moving the
    model to `device`; the rest moves in its own precision."""
    from studio.modeling.quant import quantize_model_linears

    scope = model if scope is None else scope
    blocks = max((m for m in scope.modules() if isinstance(m, torch.nn.ModuleList)), key=len, default=None)
    swapped = 0
    if blocks is not None:
        for block in blocks:
            block.to(device)
            swapped += quantize_model_linears(block, compute_dtype=compute_dtype)
    model.to(device)
    swapped += quantize_model_linears(scope, compute_dtype=compute_dtype)
    return swapped



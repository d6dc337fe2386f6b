"""Merge a run's adapter into the original-precision base weights and prove the merge changed nothing.

Merging always starts from the base model's own weights (never the 4-bit copy used for QLoRA): the
merged model is what the adapter computes on the base the user ships. After saving, the merged model is
reloaded from disk and its logits compared with base+adapter on held-out prompts, and its tokenizer and
generation_config go through the serving-consistency gate (studio.export.consistency: prompts render as in
training, generation stops on the trained end-of-turn token); past the tolerance, or on a gate failure, the
merge fails loudly and the folder is not left behind as if it were good.

A vision-language run merges the same way, with what makes it one: it loads through
AutoModelForImageTextToText, the merged folder gets the processor (images, chat template, tokenizer) so plain
transformers loads it with AutoModelForImageTextToText + AutoProcessor, and the logits are compared on image
prompts (held-out rows, else the first training rows, with their pictures, rendered and batched as training did),
so the parity check covers the vision tower and projector as well as the language model. The gate's
tokenizer-level checks (prompt format, stop and pad tokens, thinking default) apply unchanged to the processor's
tokenizer and are run; merge.json records a note that its fixed conversations are text-only.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from studio.errors import StudioError
from studio.evaluation.probes import probe_texts
from studio.training.rundir import ADAPTER, MERGE, MERGED, open_run, write_json

# Largest allowed |merged - adapter| logit difference, relative to the logits' scale, per precision.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}
PROBES = 4  # held-out conversations (or fixed prompts) the merged logits are compared on


@dataclass
class MergeResult:
    """Where the merged model is and how closely it reproduces the adapter's logits."""

    merged_dir: Path
    max_abs_diff: float
    rel_diff: float
    tolerance: float
    prompts: int
    passed: bool
    consistency: dict = field(default_factory=dict)  # the serving-consistency gate (Consistency.to_dict())

    def to_dict(self) -> dict:
        """JSON-ready form."""
        data = asdict(self)
        data["merged_dir"] = str(self.merged_dir)
        return data


def merge(run_dir: str | Path, out: str | Path | None = None, check: bool = True) -> MergeResult:
    """Merge the adapter into the base, save it as safetensors with tokenizer (a vision run: processor) and generation config, verify it."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from studio.evaluation.generate import stop_token_ids
    from studio.export.consistency import check_merge
    from studio.modeling.adapter import load_with_adapter
    from studio.modeling.quiet import quiet_libraries

    run_dir, recipe = open_run(run_dir)
    out = Path(out) if out else run_dir / MERGED
    loaded = load_with_adapter(recipe, run_dir / ADAPTER, vision=True)
    model, tokenizer, device, dtype, processor = loaded.model, loaded.tokenizer, loaded.device, loaded.dtype, loaded.processor
    batch = _probe_batch(recipe, tokenizer, device) if processor is None else _vision_probe_batch(recipe, processor, device, dtype)
    with torch.no_grad():
        reference = model(**batch).logits.float()
    merged = model.merge_and_unload()

    stops = stop_token_ids(tokenizer, merged)
    merged.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    merged.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    # The processor saves its tokenizer too, plus what turns images into pixels and image tokens.
    (processor or tokenizer).save_pretrained(str(tmp))
    del merged, model, loaded

    quiet_libraries()
    auto = AutoModelForCausalLM if processor is None else AutoModelForImageTextToText
    reloaded = auto.from_pretrained(tmp, dtype=dtype, use_safetensors=True).to(device).eval()
    with torch.no_grad():
        logits = reloaded(**batch).logits.float()
    mask = batch["attention_mask"].bool()
    diff = (logits - reference).abs()[mask]
    max_abs = float(diff.max())
    rel = max_abs / max(float(reference[mask].abs().max()), 1e-6)
    tolerance = TOLERANCE[dtype]
    del reloaded
    try:
        gate = check_merge(tokenizer, tmp, recipe, stops, out, run_dir)
        if processor is not None:
            gate.notes.append("vision-language run: the gate compared the merged tokenizer's chat template, stop and pad tokens with training's "
                              "on text conversations (the template's image placeholders are covered by the logit-parity check on image prompts)")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    parity = rel <= tolerance
    result = MergeResult(out, max_abs, rel, tolerance, int(batch["input_ids"].shape[0]), parity and gate.passed, gate.to_dict())
    if check and not result.passed:
        shutil.rmtree(tmp, ignore_errors=True)
        if parity:
            raise gate.error("merge")
        raise StudioError(
            f"the merged model does not reproduce the adapter: max logit difference {max_abs:.3g} ({rel:.2e} relative, tolerance {tolerance:.0e})",
            where=str(run_dir),
            fix="merge in float32 (--set model.dtype=float32 in the recipe) or report a bug with this run directory",
        )
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    write_json(run_dir / MERGE, result.to_dict())
    return result


def _probe_batch(recipe, tokenizer, device) -> dict:
    """The probe texts (held-out conversations when the recipe has them) as one right-padded batch."""
    texts = probe_texts(recipe, tokenizer, PROBES)
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False, truncation=True, max_length=recipe.data.max_length)
    finally:
        tokenizer.padding_side = side
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


def _vision_probe_batch(recipe, processor, device, dtype) -> dict:
    """Up to PROBES image rows (held-out data when the recipe has it, else the first training rows) rendered and
    batched as training did: token ids, attention mask, pixel values and the processor's per-token extras."""
    from studio.data import load_examples, load_heldout
    from studio.data.vision import VisionCollator, VisionRenderer, on_device

    spec = recipe.data
    source = spec.test_path or spec.val_path
    # Training rows are a fair probe for parity: it compares two computations of the same function, not quality.
    _fmt, examples = load_heldout(source, spec) if source else load_examples(spec.path, spec)
    examples = [e for e in examples if e.messages][:PROBES]
    if not examples:
        raise StudioError("no chat rows to compare the merged model on", where=source or spec.path, fix="the data must hold chat rows with images")
    renderer = VisionRenderer(processor, spec.max_length, "all", spec.image_max_pixels)
    rows = [renderer.encode(e) for e in examples]
    batch = VisionCollator(processor, spec.image_max_pixels).encoded_batch(rows)
    batch.pop("labels")
    return on_device(batch, device, dtype)

"""Export a run as GGUF (llama.cpp) or an Ollama model, and prove the file computes what the merged model does.

    studio export RUN_DIR --format gguf [--quant f16|q8_0|f32] [--out PATH] [--json]

The export is checked by a round trip through an independent reader: the GGUF is loaded back with
transformers' `gguf_file=` loader (its own tensor-name map, its own inverse of the llama rotary
reorder, its own tokenizer builder) and compared with the merged safetensors model on held-out
prompts rendered with the training chat template (the recipe's data.test_path, else val_path, else
a few fixed prompts):

- top-1 agreement: the share of positions, over every position of every prompt, where both models
  predict the same next token;
- mean KL(merged || gguf) over the same positions, in nats;
- the GGUF's tokenizer must encode every prompt to the merged tokenizer's ids.

Thresholds (override with min_top1 / max_kl):

    quant   min top-1   max mean KL   why
    f32     0.98        0.01          exact copy; anything but ~0 is a bug
    f16     0.98        0.01          half-precision rounding costs ~1e-6..1e-4 nats
    q8_0    0.90        0.05          8-bit blocks cost ~1e-3 nats on trained models; tiny random
                                      models, whose next-token distributions are near-flat, flip
                                      a few near-ties

A layout error (a missed rotary reorder, a wrong tensor) costs tenths of a nat or more and drops
top-1 toward chance, far past either line. A failed check raises StudioError and the file is not
shipped: it was written under a temporary name and is deleted; only a passing file is renamed into
place. The figures go to RUN_DIR/export.json either way.

Gemma 3 note: transformers' GGUF reader does not read a Gemma 3 file's attention scale or its
sliding/full layer pattern and falls back to class defaults (scale 1/sqrt(256), every 6th layer
full). The round trip fills both from the file the way llama.cpp does (scale 1/sqrt(key_length),
the written layer pattern), so the check still judges the file and not the reader's gaps.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import StudioError
from .export_gguf import QUANTS, write_gguf
from .rundir import RECIPE, check_run_dir, read_json, write_json

FORMATS = ("gguf", "ollama")
EXPORT_JSON = "export.json"

# quant -> (min top-1 agreement, max mean KL in nats); see the module docstring.
THRESHOLDS = {"f32": (0.98, 0.01), "f16": (0.98, 0.01), "q8_0": (0.90, 0.05)}

_FIXED_PROMPTS = [
    "Hello! Who are you?",
    "Write one sentence about the sea.",
    "What is 12 plus 30? Answer with a number.",
    "List three colours, separated by commas.",
]
_MAX_PROMPTS = 8


@dataclass
class ExportResult:
    """Where the export went and how closely the GGUF reproduces the merged model."""

    format: str
    quant: str
    path: Path | None
    modelfile: Path | None
    top1_agreement: float
    mean_kl: float
    max_kl_position: float
    prompts: int
    positions: int
    tokenizer_match: bool
    min_top1: float
    max_kl: float
    passed: bool
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        """Every file the export wrote (the GGUF, and the Modelfile for Ollama)."""
        return [p for p in (self.path, self.modelfile) if p is not None]

    def to_dict(self) -> dict:
        """JSON-ready form."""
        data = asdict(self)
        data["path"] = None if self.path is None else str(self.path)
        data["modelfile"] = None if self.modelfile is None else str(self.modelfile)
        return data


def export(
    run_dir: str | Path,
    fmt: str = "gguf",
    quant: str = "f16",
    out: str | Path | None = None,
    check: bool = True,
    max_kl: float | None = None,
    min_top1: float | None = None,
    *,
    _reorder_rotary: bool = True,
) -> ExportResult:
    """Write the run's merged model as GGUF (plus a Modelfile for `fmt="ollama"`), round-trip it, record export.json.

    `out`: for gguf a `.gguf` file path or a folder (default RUN_DIR/export/<run>-<quant>.gguf); for
    ollama a folder (default RUN_DIR/ollama) that receives model.gguf and Modelfile. Runs `merge` first
    when RUN_DIR/merged is missing. With `check=False` the figures are still measured and recorded,
    but a divergent file is kept.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .models import quiet_libraries
    from .recipe_io import load_recipe

    started = time.monotonic()
    if fmt not in FORMATS:
        raise StudioError(f"unknown export format '{fmt}'", where="--format", fix=f"use one of {', '.join(FORMATS)}")
    if quant not in QUANTS:
        raise StudioError(f"unknown GGUF precision '{quant}'", where="--quant", fix=f"use one of {', '.join(QUANTS)}")
    run_dir = check_run_dir(run_dir)
    recipe = load_recipe(run_dir / RECIPE)
    merged_dir = run_dir / "merged"
    if not (merged_dir / "config.json").exists():
        from .merge import merge

        merge(run_dir)
    path, modelfile_path = _targets(run_dir, fmt, quant, out)
    default_top1, default_kl = THRESHOLDS[quant]
    min_top1 = default_top1 if min_top1 is None else float(min_top1)
    max_kl = default_kl if max_kl is None else float(max_kl)

    quiet_libraries()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    modelfile = None
    if fmt == "ollama":  # recognise the template before any heavy work, so an unsupported one fails fast
        from .export_ollama import modelfile_text

        modelfile = modelfile_text(tokenizer, path.name, recipe.data.system_prompt)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.gguf")
    try:
        write_gguf(merged_dir, tmp, quant, name=run_dir.name, reorder_rotary=_reorder_rotary, model=merged, tokenizer=tokenizer)
        texts = _probe_texts(recipe, tokenizer)
        figures = _round_trip(merged, tokenizer, tmp, texts, recipe.data.max_length)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    passed = figures["tokenizer_match"] and figures["top1"] >= min_top1 and figures["mean_kl"] <= max_kl
    result = ExportResult(
        format=fmt, quant=quant, path=path, modelfile=modelfile_path,
        top1_agreement=figures["top1"], mean_kl=figures["mean_kl"], max_kl_position=figures["max_kl"],
        prompts=len(texts), positions=figures["positions"], tokenizer_match=figures["tokenizer_match"],
        min_top1=min_top1, max_kl=max_kl, passed=passed, seconds=0.0, notes=figures["notes"],
    )
    if check and not passed:
        tmp.unlink(missing_ok=True)
        result.path = result.modelfile = None
        result.seconds = round(time.monotonic() - started, 2)
        _record(run_dir, result)
        why = [] if figures["tokenizer_match"] else ["its tokenizer encodes the prompts differently"]
        if figures["top1"] < min_top1:
            why.append(f"top-1 agreement {figures['top1']:.3f} < {min_top1}")
        if figures["mean_kl"] > max_kl:
            why.append(f"mean KL {figures['mean_kl']:.3g} > {max_kl}")
        raise StudioError(
            f"export diverges from the merged model: {'; '.join(why)} over {figures['positions']} positions of {len(texts)} prompts ({quant}); nothing was written",
            where=str(path),
            fix="try --quant f16 or f32; if those fail too, the architecture's export is wrong: report it with this run directory",
        )
    os.replace(tmp, path)
    if modelfile is not None:
        from .rundir import write_atomic

        write_atomic(modelfile_path, modelfile)
    result.seconds = round(time.monotonic() - started, 2)
    _record(run_dir, result)
    return result


def _targets(run_dir: Path, fmt: str, quant: str, out) -> tuple[Path, Path | None]:
    if fmt == "ollama":
        folder = Path(out) if out else run_dir / "ollama"
        if folder.suffix == ".gguf":
            raise StudioError("--out for --format ollama is a folder (it receives model.gguf and Modelfile)", where="--out", fix="pass a folder path")
        return folder / "model.gguf", folder / "Modelfile"
    if out is None:
        return run_dir / "export" / f"{run_dir.name}-{quant}.gguf", None
    out = Path(out)
    if out.suffix == ".gguf":
        return out, None
    return out / f"{run_dir.name}-{quant}.gguf", None


def _probe_texts(recipe, tokenizer) -> list[str]:
    """Held-out conversations rendered as training saw them, else fixed prompts with the generation prompt."""
    from .data import Renderer

    renderer = Renderer(tokenizer, recipe.data.max_length)
    try:
        from .evaluate import heldout_examples

        return [renderer.conversation_text(e.messages) for e in heldout_examples(recipe)[:_MAX_PROMPTS]]
    except StudioError:
        pass
    system = [{"role": "system", "content": recipe.data.system_prompt}] if recipe.data.system_prompt else []
    return [renderer.prompt_text([*system, {"role": "user", "content": p}]) for p in _FIXED_PROMPTS]


def _round_trip(merged, tokenizer, gguf_path: Path, texts: list[str], max_length: int) -> dict:
    """Load the GGUF with transformers' reader and compare next-token distributions and token ids."""
    import torch
    from transformers import AutoTokenizer

    notes: list[str] = []
    try:
        model = load_gguf_model(gguf_path, notes)
        gguf_tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except (ValueError, KeyError, NotImplementedError, OSError, RuntimeError) as exc:
        raise StudioError(f"the written GGUF cannot be read back: {type(exc).__name__}: {exc}", where=str(gguf_path), fix="report this with the run directory") from None
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
    del model
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


def _record(run_dir: Path, result: ExportResult) -> None:
    """Add this export's figures to RUN_DIR/export.json, keyed by format and precision."""
    path = run_dir / EXPORT_JSON
    try:
        data = read_json(path) if path.exists() else {}
    except StudioError:
        data = {}
    data[f"{result.format}-{result.quant}"] = result.to_dict()
    write_json(path, data)


def add_export_parser(subparsers) -> None:
    """Register `studio export` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "export",
        help="write the merged model as GGUF (llama.cpp) or for Ollama, checked against the merged model",
        description="Write RUN_DIR's merged model as one GGUF file (and a Modelfile with --format ollama), "
        "load it back with an independent reader and compare next-token predictions on held-out prompts. "
        "An export past the thresholds is reported as failed and not written.",
    )
    p.add_argument("run_dir", help="a run directory written by `studio train` (merged first if needed)")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="gguf", help="gguf: one .gguf file; ollama: model.gguf + Modelfile (default gguf)")
    p.add_argument("--quant", choices=QUANTS, default="f16", help="precision of the weight matrices; norms and biases stay f32 (default f16)")
    p.add_argument("--out", help="gguf: a .gguf path or a folder (default RUN_DIR/export/); ollama: a folder (default RUN_DIR/ollama)")
    p.add_argument("--min-top1", type=float, help="fail below this top-1 agreement (default 0.98 for f16/f32, 0.90 for q8_0)")
    p.add_argument("--max-kl", type=float, help="fail above this mean KL in nats (default 0.01 for f16/f32, 0.05 for q8_0)")
    p.add_argument("--no-check", action="store_true", help="keep the file even when the round trip diverges (figures are still recorded)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_export(args) -> int:
    """`studio export`: write, round-trip and report."""
    import json

    result = export(args.run_dir, fmt=args.fmt, quant=args.quant, out=args.out, check=not args.no_check, max_kl=args.max_kl, min_top1=args.min_top1)
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
        return 0
    lines = [f"{'exported' if result.passed else 'exported (DIVERGES, kept by --no-check)'}: {result.path}"]
    if result.modelfile:
        lines.append(f"modelfile: {result.modelfile}  (ollama create NAME -f {result.modelfile})")
    lines.append(
        f"round trip ({result.quant}, {result.prompts} prompts, {result.positions} positions): "
        f"top-1 agreement {result.top1_agreement:.4f} (>= {result.min_top1}), mean KL {result.mean_kl:.2e} (<= {result.max_kl}), "
        f"tokenizer {'identical' if result.tokenizer_match else 'DIFFERS'}"
    )
    print("\n".join(lines))
    return 0 if result.passed else 1

"""Export a run as GGUF (llama.cpp) or an Ollama model, and prove the file computes what the merged model does.

    studio export RUN_DIR --format gguf [--quant f16|q8_0|f32] [--out PATH] [--json]

The merged model (merged first when the run has none) is written to a temporary GGUF, checked by a round
trip through an independent reader (studio.export.round_trip) on the run's held-out prompts and by the
serving-consistency gate (studio.export.consistency: chat template, stop tokens, thinking default and stop
behaviour of the GGUF and the Modelfile against training), and renamed into place only when both pass; a
failed check raises a StudioError and writes nothing. The figures go to RUN_DIR/export.json either way.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio.errors import StudioError
from studio.evaluation.probes import probe_texts
from studio.export.formats import DEFAULT_QUANT, FORMATS, QUANTS, THRESHOLDS
from studio.export.gguf import write_gguf
from studio.export.round_trip import compare_with_gguf
from studio.training.rundir import EXPORT, EXPORTS, OLLAMA, merged_dir, open_run, read_json_or_empty, write_atomic, write_json

PROBES = 8  # held-out conversations (or fixed prompts) the round trip compares on


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
    consistency: dict = field(default_factory=dict)  # the serving-consistency gate (Consistency.to_dict())

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
    fmt: str = FORMATS[0],
    quant: str = DEFAULT_QUANT,
    out: str | Path | None = None,
    check: bool = True,
    max_kl: float | None = None,
    min_top1: float | None = None,
) -> ExportResult:
    """Write the run's merged model as GGUF (plus a Modelfile for `fmt="ollama"`), round-trip it, record export.json.

    `out`: for gguf a `.gguf` file path or a folder (default RUN_DIR/export/<run>-<quant>.gguf); for
    ollama a folder (default RUN_DIR/ollama) that receives model.gguf and Modelfile. Runs `merge` first
    when the run has no merged model yet (wherever merge.json says it went). With `check=False` the figures and the
    consistency gate are still measured and recorded, but a divergent or inconsistent file is kept.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.export.consistency import check_export
    from studio.export.merge import merge
    from studio.export.round_trip import load_gguf
    from studio.modeling.quiet import quiet_libraries

    started = time.monotonic()
    if fmt not in FORMATS:
        raise StudioError(f"unknown export format '{fmt}'", where="--format", fix=f"use one of {', '.join(FORMATS)}")
    if quant not in QUANTS:
        raise StudioError(f"unknown GGUF precision '{quant}'", where="--quant", fix=f"use one of {', '.join(QUANTS)}")
    run_dir, recipe = open_run(run_dir)
    _refuse_vision(run_dir, recipe)
    merged = merged_dir(run_dir) or merge(run_dir).merged_dir
    path, modelfile_path = _targets(run_dir, fmt, quant, out)
    default_top1, default_kl = THRESHOLDS[quant]
    min_top1 = default_top1 if min_top1 is None else float(min_top1)
    max_kl = default_kl if max_kl is None else float(max_kl)

    quiet_libraries()
    tokenizer = AutoTokenizer.from_pretrained(merged)
    modelfile = None
    if fmt == "ollama":  # recognise the template before any heavy work, so an unsupported one fails fast
        from studio.export.ollama import modelfile_text

        modelfile = modelfile_text(tokenizer, path.name, recipe.data.system_prompt, _generation_stops(merged, tokenizer))
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.gguf")
    try:
        write_gguf(merged, tmp, quant, name=run_dir.name, model=model, tokenizer=tokenizer)
        texts = probe_texts(recipe, tokenizer, PROBES)
        load_notes: list[str] = []
        loaded = load_gguf(tmp, load_notes)
        figures = compare_with_gguf(model, tokenizer, tmp, texts, recipe.data.max_length, loaded=loaded)
        gate = check_export(run_dir, recipe, fmt, merged, model, tmp, path, *loaded, modelfile, modelfile_path)
        del loaded
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    round_trip_passed = figures["tokenizer_match"] and figures["top1"] >= min_top1 and figures["mean_kl"] <= max_kl
    result = ExportResult(
        format=fmt, quant=quant, path=path, modelfile=modelfile_path,
        top1_agreement=figures["top1"], mean_kl=figures["mean_kl"], max_kl_position=figures["max_kl"],
        prompts=len(texts), positions=figures["positions"], tokenizer_match=figures["tokenizer_match"],
        min_top1=min_top1, max_kl=max_kl, passed=round_trip_passed and gate.passed, seconds=0.0, notes=load_notes + figures["notes"],
        consistency=gate.to_dict(),
    )
    if check and not result.passed:
        tmp.unlink(missing_ok=True)
        result.path = result.modelfile = None
        result.seconds = round(time.monotonic() - started, 2)
        _record(run_dir, result)
        if round_trip_passed:
            raise gate.error("export")
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
        write_atomic(modelfile_path, modelfile)
    result.seconds = round(time.monotonic() - started, 2)
    _record(run_dir, result)
    return result


def _generation_stops(merged: Path, tokenizer) -> tuple[str, ...]:
    """The tokens the merged model's generation_config stops on, as text (for the Modelfile's stop lines)."""
    from studio.export.serving import merged_stop_ids

    ids = sorted(i for i in merged_stop_ids(merged)[0] if 0 <= i < len(tokenizer))
    return tuple(tokenizer.convert_ids_to_tokens(ids))


def _targets(run_dir: Path, fmt: str, quant: str, out) -> tuple[Path, Path | None]:
    if fmt == "ollama":
        folder = Path(out) if out else run_dir / OLLAMA
        if folder.suffix == ".gguf":
            raise StudioError("--out for --format ollama is a folder (it receives model.gguf and Modelfile)", where="--out", fix="pass a folder path")
        return folder / "model.gguf", folder / "Modelfile"
    if out is None:
        return run_dir / EXPORTS / f"{run_dir.name}-{quant}.gguf", None
    out = Path(out)
    if out.suffix == ".gguf":
        return out, None
    return out / f"{run_dir.name}-{quant}.gguf", None


def _record(run_dir: Path, result: ExportResult) -> None:
    """Add this export's figures to RUN_DIR/export.json, keyed by format and precision."""
    path = run_dir / EXPORT
    data = read_json_or_empty(path)  # a damaged record is replaced, not a reason to lose this export's figures
    data[f"{result.format}-{result.quant}"] = result.to_dict()
    write_json(path, data)




def _refuse_vision(run_dir: Path, recipe) -> None:
    """Refuse a vision-language run before merging: merge supports it, but the GGUF path converts and checks a
    text model only (and would fail deep in transformers, or ship a GGUF without its vision projector)."""
    from studio.modeling.source import resolve_model
    from studio.modeling.vision import is_vision_model

    if is_vision_model(resolve_model(recipe.model.name, recipe.model.revision)):
        raise StudioError("export of vision-language runs is not supported yet", where=str(run_dir),
                          fix=f"run `studio merge {run_dir}`: the merged folder loads with AutoModelForImageTextToText + AutoProcessor")

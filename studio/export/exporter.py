"""Export a run as GGUF (llama.cpp) or an Ollama model, and prove the file computes what the merged model does.

    studio export RUN_DIR --format gguf [--quant f16|q8_0|f32] [--out PATH] [--json]

The merged model (merged first when the run has none) is written to a temporary GGUF, checked by a round
trip through an independent reader (studio.export.round_trip) on the run's held-out prompts and by the
serving-consistency gate (studio.export.consistency: chat template, stop tokens, thinking default and stop
behaviour of the GGUF and the Modelfile against training), and renamed into place only when both pass; a
failed check raises a StudioError and writes nothing. The figures go to RUN_DIR/export.json either way.

A vision-language run (Gemma 3, Idefics3/SmolVLM: studio.export.mmproj) exports as two GGUFs: the language model
(`<name>.gguf`, the same round trip and gate, run against the merged vision model itself on text) and llama.cpp's
vision projector (`mmproj-<name>.gguf`; for Ollama `mmproj.gguf`, named by a second FROM in the Modelfile), read
back tensor by tensor (a projector that does not read back is an error even with check=False: the file is broken,
not divergent). Any other vision architecture is refused before merging, naming it and the supported ones. The text
checks of a vision run use text conversations only (its held-out rows carry images that the text GGUF cannot see):
export.json notes it.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio.errors import StudioError
from studio.evaluation.probes import probe_texts
from studio.export.formats import DEFAULT_QUANT, FORMATS, QUANTS, THRESHOLDS
from studio.export.gguf import language_model_of, write_gguf
from studio.export.mmproj import check_mmproj, vision_plan, write_mmproj
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
    mmproj: Path | None = None  # a vision run's projector GGUF
    projector: dict = field(default_factory=dict)  # its read-back figures (check_mmproj)

    @property
    def paths(self) -> list[Path]:
        """Every file the export wrote (the GGUF, a vision run's projector GGUF, and the Modelfile for Ollama)."""
        return [p for p in (self.path, self.mmproj, self.modelfile) if p is not None]

    def to_dict(self) -> dict:
        """JSON-ready form."""
        data = asdict(self)
        for key in ("path", "modelfile", "mmproj"):
            data[key] = None if getattr(self, key) is None else str(getattr(self, key))
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
    ollama a folder (default RUN_DIR/ollama) that receives model.gguf and Modelfile. A vision run's projector goes
    beside the GGUF (mmproj-<that file name>; mmproj.gguf for ollama). Runs `merge` first
    when the run has no merged model yet (wherever merge.json says it went). With `check=False` the figures and the
    consistency gate are still measured and recorded, but a divergent or inconsistent file is kept.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

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
    plan = _vision_plan(run_dir, recipe)  # an unsupported vision architecture stops here, before merging
    merged = merged_dir(run_dir) or merge(run_dir).merged_dir
    plan = vision_plan(merged) if plan else None  # what is exported is the merged folder: decide on its config too
    path, modelfile_path = _targets(run_dir, fmt, quant, out)
    mmproj_path = None if plan is None else path.with_name("mmproj.gguf" if fmt == "ollama" else f"mmproj-{path.name}")
    checked = _text_checks_recipe(recipe) if plan else recipe
    default_top1, default_kl = THRESHOLDS[quant]
    min_top1 = default_top1 if min_top1 is None else float(min_top1)
    max_kl = default_kl if max_kl is None else float(max_kl)

    quiet_libraries()
    tokenizer = AutoTokenizer.from_pretrained(merged)
    modelfile = None
    if fmt == "ollama":  # recognise the template before any heavy work, so an unsupported one fails fast
        from studio.export.ollama import modelfile_text

        modelfile = modelfile_text(tokenizer, path.name, recipe.data.system_prompt, _generation_stops(merged, tokenizer),
                                   projector=None if mmproj_path is None else mmproj_path.name)
    if plan is None:
        model = text_model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    else:  # the GGUF is written from the language model, and compared with the whole merged model on text
        model = AutoModelForImageTextToText.from_pretrained(merged, dtype=torch.float32).eval()
        text_model = language_model_of(model)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.gguf")
    mm_tmp = None if mmproj_path is None else mmproj_path.with_name(f".{mmproj_path.stem}.tmp{os.getpid()}.gguf")
    projector: dict = {}
    try:
        write_gguf(merged, tmp, quant, name=run_dir.name, model=text_model, tokenizer=tokenizer)
        if plan is not None:  # a wrong projector is a StudioError here, before the slower text checks
            tensors, meta = write_mmproj(model, AutoProcessor.from_pretrained(merged), mm_tmp, quant, plan, run_dir.name)
            projector = check_mmproj(mm_tmp, tensors, meta, quant)
            del tensors
        texts = probe_texts(checked, tokenizer, PROBES)
        load_notes: list[str] = []
        loaded = load_gguf(tmp, load_notes)
        figures = compare_with_gguf(model, tokenizer, tmp, texts, recipe.data.max_length, loaded=loaded)
        gate = check_export(run_dir, checked, fmt, merged, model, tmp, path, *loaded, modelfile, modelfile_path)
        del loaded
    except BaseException:
        _remove(tmp, mm_tmp)
        raise
    if plan is not None:
        load_notes.append(_VISION_NOTE.format(projector=plan.projector, model_type=plan.model_type))
        if fmt == "ollama":
            load_notes.append(_OLLAMA_VISION_NOTE)
    round_trip_passed = figures["tokenizer_match"] and figures["top1"] >= min_top1 and figures["mean_kl"] <= max_kl
    result = ExportResult(
        format=fmt, quant=quant, path=path, modelfile=modelfile_path,
        top1_agreement=figures["top1"], mean_kl=figures["mean_kl"], max_kl_position=figures["max_kl"],
        prompts=len(texts), positions=figures["positions"], tokenizer_match=figures["tokenizer_match"],
        min_top1=min_top1, max_kl=max_kl, passed=round_trip_passed and gate.passed, seconds=0.0, notes=load_notes + figures["notes"],
        consistency=gate.to_dict(), mmproj=mmproj_path, projector=projector,
    )
    if check and not result.passed:
        _remove(tmp, mm_tmp)
        result.path = result.modelfile = result.mmproj = None
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
    if mm_tmp is not None:
        os.replace(mm_tmp, mmproj_path)
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


def _remove(*paths) -> None:
    for p in paths:
        if p is not None:
            p.unlink(missing_ok=True)


_VISION_NOTE = ("vision-language run ({model_type}): the text GGUF holds the language model and mmproj the vision tower and "
                "'{projector}' projector (read back tensor by tensor); the text round trip and gate compared the merged model on "
                "text conversations only. Not run through llama.cpp's own mtmd loader or Ollama here")
_OLLAMA_VISION_NOTE = ("Ollama: the Modelfile's second FROM names mmproj.gguf, which `ollama create` stores as the projector; Ollama "
                       "serves split-projector models on its llama.cpp engine (ollama/ollama#12241), older releases answer text only (#9967)")


def _vision_plan(run_dir: Path, recipe):
    """The export plan of a vision-language run from its merged folder, else its base model (None for a text run);
    a StudioError before any work for a vision architecture the studio cannot write for llama.cpp."""
    from studio.modeling.source import resolve_model

    return vision_plan(merged_dir(run_dir) or resolve_model(recipe.model.name, recipe.model.revision))


def _text_checks_recipe(recipe):
    """The recipe the text checks of a vision run read: its held-out rows carry images the text GGUF cannot see, so
    the round trip and the gate use the fixed text conversations instead."""
    data = recipe.data.model_copy(update={"test_path": None, "val_path": None})
    return recipe.model_copy(update={"data": data})

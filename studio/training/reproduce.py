"""`studio reproduce RUN_DIR`: re-derive a run from its directory alone and say how closely it matches.

The dataset must be byte-identical to the one recorded in data.json (sha256); then the resolved recipe
is trained again with its seed, and the loss curves and adapters are compared. On CPU the result is
identical; on GPUs, non-deterministic kernels can leave small differences, which are reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from studio.data.manifest import sha256_of
from studio.errors import StudioError
from studio.training.rundir import ADAPTER, DATA, REPRODUCE, open_run, read_json, read_metrics, write_json


@dataclass
class ReproduceResult:
    """How the re-run compares with the recorded run."""

    run_dir: str
    new_run_dir: str
    steps: int
    max_loss_diff: float
    max_adapter_diff: float
    identical: bool

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def check_data_unchanged(run_dir: Path) -> None:
    """Refuse when a dataset file (or a GRPO run's reward file) no longer matches the sha256 recorded at training time."""
    manifest = read_json(run_dir / DATA)
    recorded = [(manifest.get(path_key), manifest.get(sha_key)) for path_key, sha_key in (("path", "sha256"), ("val_path", "val_sha256"))]
    recorded += [(r["source"], r["sha256"]) for r in manifest.get("rewards", []) if r.get("sha256")]
    for path, sha in recorded:
        if not path or not sha:
            continue
        if not Path(path).exists():
            raise StudioError(f"dataset file is missing: {path}", where=str(run_dir / DATA), fix="restore the file the run was trained on")
        actual = sha256_of(path)
        if actual != sha:
            raise StudioError(
                f"{'reward file' if path.endswith('.py') else 'dataset'} {path} changed since training (sha256 {actual[:12]}... != recorded {sha[:12]}...)",
                where=path,
                fix="restore the original file; a reproduction must train on exactly the same data",
            )


def reproduce(run_dir: str | Path, out: str | Path | None = None, progress: bool = False) -> ReproduceResult:
    """Train the run's resolved recipe again into `out` and compare losses and adapters with the original."""
    from safetensors.torch import load_file

    from studio.training.train import train

    run_dir, recipe = open_run(run_dir)
    check_data_unchanged(run_dir)
    new_dir = Path(out) if out else run_dir.with_name(run_dir.name + "-reproduced")
    if new_dir.resolve() == run_dir.resolve():
        raise StudioError("the reproduction would overwrite the run it reproduces", where="--out", fix="choose another folder")
    recipe = recipe.model_copy(update={"output": recipe.output.model_copy(update={"dir": str(new_dir)})})
    result = train(recipe, progress=progress, overwrite=True)

    old_losses = {r["step"]: r["train_loss"] for r in read_metrics(run_dir) if "train_loss" in r}
    new_losses = {r["step"]: r["train_loss"] for r in read_metrics(new_dir) if "train_loss" in r}
    if old_losses.keys() != new_losses.keys():
        loss_diff = float("inf")
    else:
        loss_diff = max((abs(old_losses[s] - new_losses[s]) for s in old_losses), default=0.0)
    old = load_file(str(run_dir / ADAPTER / "adapter_model.safetensors"))
    new = load_file(str(new_dir / ADAPTER / "adapter_model.safetensors"))
    if old.keys() != new.keys():
        adapter_diff = float("inf")
    else:
        adapter_diff = max((float((old[k].float() - new[k].float()).abs().max()) for k in old), default=0.0)
    outcome = ReproduceResult(str(run_dir), str(new_dir), result.steps, loss_diff, adapter_diff, loss_diff == 0.0 and adapter_diff == 0.0)
    write_json(run_dir / REPRODUCE, outcome.to_dict())
    return outcome

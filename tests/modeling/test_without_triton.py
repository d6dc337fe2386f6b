"""Without Triton (Windows, macOS, a broken install) the studio still imports and trains: LoRA and QLoRA run
through the kernels' plain-torch references, and a GPU run would say why it is not using the fused kernels.

The process that hides Triton is a fresh one: this one imported Triton long ago.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import helpers

SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    sys.modules["triton"] = None  # `import triton` now raises ImportError, as where no wheel exists
    sys.modules["triton.language"] = None
    from types import SimpleNamespace

    import torch
    from studio.config.load import load_recipe
    from studio.modeling.loading import quant_backend
    from studio.training.train import train
    from studio_kernels.runtime import resolve_backend, triton_available

    model_dir, data, out = sys.argv[1:4]
    raw = lambda method, name: {
        "model": {"name": model_dir, "dtype": "float32"}, "method": method,
        "lora": {"rank": 4, "alpha": 8, "targets": "all-linear"},
        "quant": {"backend": "auto", "compute_dtype": "float32"},
        "data": {"path": data, "max_length": 64},
        "train": {"max_steps": 2, "batch_size": 4, "save_steps": 2, "device": "cpu", "seed": 1, "warmup_ratio": 0.0},
        "output": {"dir": f"{out}/{name}", "name": name},
    }
    results = {"triton_available": triton_available()}
    for method in ("lora", "qlora"):
        result = train(load_recipe(raw(method, method)), progress=False)
        results[method] = {"steps": result.steps, "loss": result.train_loss, "adapter": (result.adapter_dir / "adapter_model.safetensors").exists()}
    qlora = load_recipe(raw("qlora", "x"))
    results["cpu_backend"] = quant_backend(qlora, torch.device("cpu"))
    results["gpu_backend"] = quant_backend(qlora, torch.device("cuda"))
    records = []
    logging.getLogger("studio_kernels").addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r.getMessage())})())
    fake_gpu_tensor = SimpleNamespace(is_cuda=True)
    results["gpu_tensor_backend"] = [resolve_backend("auto", fake_gpu_tensor) for _ in range(3)]
    results["said"] = records
    print(json.dumps(results))
    """
)


def test_lora_and_qlora_train_through_the_references_without_triton(tmp_path, tiny_llama_dir, tiny_data):
    env = {**os.environ, "TRITON_INTERPRET": "0", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_llama_dir), str(tiny_data), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["triton_available"] is False
    for method in ("lora", "qlora"):
        assert results[method]["steps"] == 2 and results[method]["adapter"] and results[method]["loss"] > 0
    assert "4-bit base weights: studio" in done.stderr  # on a CPU the references are the kernels' own path
    assert results["cpu_backend"][0] == "studio"
    backend, why = results["gpu_backend"]
    assert backend == "bitsandbytes" and "need Triton" in why and "Triton is not available" in why
    assert results["gpu_tensor_backend"] == ["torch"] * 3
    assert len(results["said"]) == 1 and "plain-torch references" in results["said"][0]  # said once, not per call


def test_an_explicit_triton_backend_without_triton_is_a_clear_error(tmp_path):
    script = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from studio_kernels import dequantize_nf4, quantize_nf4\n"
        "try:\n"
        "    dequantize_nf4(quantize_nf4(torch.randn(64, 64)), backend='triton')\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "TRITON_INTERPRET": "0"})
    assert done.returncode == 0, done.stderr
    assert "Triton is not available" in done.stdout and "backend='torch'" in done.stdout


def test_the_kernels_package_declares_triton_only_where_it_has_wheels():
    text = (helpers.REPO / "kernels" / "pyproject.toml").read_text()
    (line,) = [dep for dep in text.splitlines() if dep.strip().startswith('"triton')]
    assert "sys_platform == 'linux'" in line, line

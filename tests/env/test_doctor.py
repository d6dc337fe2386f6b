"""`studio doctor`: one verdict and fix per dependency, on this machine and on faked ones (GPU, no Triton, no bnb)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from studio.cli import main
from studio.env import doctor

NAMES = ["python", "studio", "torch", "gpu", "triton", "bitsandbytes", "nf4 path", "cache", "offline", "ui port"]


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_driver(monkeypatch):
    """A machine without nvidia-smi (whatever this one has)."""
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)


def test_this_cpu_machine_gets_every_line_and_no_failure(no_driver):
    checks = by_name(doctor.diagnose(port=free_port()))
    assert list(checks) == NAMES
    assert checks["python"].status == "ok" and sys.executable in checks["python"].detail
    assert checks["torch"].status == "info" and torch.__version__ in checks["torch"].detail
    assert checks["gpu"].status == "warn" and "no CUDA GPU" in checks["gpu"].detail and checks["gpu"].fix
    assert checks["triton"].status == "info" and "interpreter" in checks["triton"].detail
    assert checks["nf4 path"].status == "info" and "plain-torch reference" in checks["nf4 path"].detail
    assert checks["ui port"].status == "ok"
    assert not [c for c in checks.values() if c.status == "fail"]


def test_cli_text_and_json(capsys, no_driver):
    port = free_port()
    assert main(["doctor", "--port", str(port)]) == 0
    text = capsys.readouterr().out
    assert "[WARN] gpu" in text and "fix:" in text and f"127.0.0.1:{port} is free" in text
    assert main(["doctor", "--json", "--port", str(port)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and [c["name"] for c in report["checks"]] == NAMES


def test_a_taken_port_is_named_with_a_fix(no_driver):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        check = doctor.check_port(port)
    assert check.status == "warn" and str(port) in check.detail and "--port" in check.fix


def test_without_triton_the_kernels_are_reported_and_qlora_falls_back_loudly(monkeypatch, no_driver):
    # A None entry in sys.modules makes `import` raise ImportError, as on Windows or macOS without Triton.
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.setitem(sys.modules, "studio_kernels", None)
    checks = by_name(doctor.diagnose(port=free_port()))
    assert checks["triton"].status == "warn" and "bitsandbytes" in checks["triton"].fix
    assert checks["studio"].status == "warn" and "pip install ./kernels" in checks["studio"].fix
    assert checks["nf4 path"].status == "warn"
    assert "bitsandbytes" in checks["nf4 path"].detail and "cannot be imported" in checks["nf4 path"].detail


def test_without_bitsandbytes(monkeypatch, no_driver):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    check = by_name(doctor.diagnose(port=free_port()))["bitsandbytes"]
    assert check.status == "warn" and "pip install bitsandbytes" in check.fix


def test_a_gpu_torch_cannot_use_is_a_failure_with_the_fix(monkeypatch):
    """nvidia-smi sees a card but torch is a CPU build: the most common install mistake."""
    monkeypatch.setattr(doctor.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(doctor.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "NVIDIA GeForce RTX 4090, 550.54\n", ""))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check = doctor.check_gpu()
    assert check.status == "fail" and "RTX 4090" in check.detail and "torch build" in check.fix


def fake_gpu(monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(doctor.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "NVIDIA L4, 550.54\n", ""))
    for name, value in {"is_available": lambda: True, "current_device": lambda: 0, "device_count": lambda: 1,
                        "get_device_name": lambda index=None: "NVIDIA L4", "mem_get_info": lambda index=None: (20 * 2**30, 22.5 * 2**30),
                        "is_bf16_supported": lambda including_emulation=True: True}.items():
        monkeypatch.setattr(torch.cuda, name, value)


def test_a_visible_gpu_reports_name_driver_and_free_memory(monkeypatch):
    fake_gpu(monkeypatch)
    check = doctor.check_gpu()
    assert check.status == "ok"
    assert "NVIDIA L4 (driver 550.54): 20.0 of 22.5 GiB free" in check.detail and "native bf16" in check.detail


def test_triton_that_cannot_compile_for_the_gpu_fails_with_a_fix(monkeypatch):
    fake_gpu(monkeypatch)

    def broken():
        raise RuntimeError("PTX .version 8.7 does not support .target sm_120")

    monkeypatch.setattr(doctor, "_compile_probe", broken)
    check = doctor.check_triton()
    assert check.status == "fail" and "sm_120" in check.detail and "quant.backend: bitsandbytes" in check.fix
    monkeypatch.setattr(doctor, "_compile_probe", lambda: None)
    assert doctor.check_triton().status == "ok"


def test_a_check_that_crashes_is_a_line_not_a_traceback(monkeypatch, no_driver):
    def boom():
        raise OSError("disk went away")

    monkeypatch.setattr(doctor, "check_cache", boom)
    checks = by_name(doctor.diagnose(port=free_port()))
    assert checks["cache"].status == "fail" and "disk went away" in checks["cache"].detail
    assert list(checks) == NAMES  # the checks after it still ran


def test_cache_without_room_warns(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: SimpleNamespace(free=2 * 2**30))
    check = doctor.check_cache()
    assert check.status == "warn" and "2.0 GiB free" in check.detail and "STUDIO_HOME" in check.fix

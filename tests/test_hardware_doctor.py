"""Recommended settings from (fake) hardware, and `kazari doctor` with monkeypatched probes."""

from __future__ import annotations

import json

import pytest

from trainer import doctor
from trainer.hardware import GpuInfo, recommend_settings
from trainer.torch_wheel import Nvidia
from tui.cli import main


def gpu(free: float, cap=(8, 6), name="RTX 3090") -> GpuInfo:
    return GpuInfo(name=name, total_gb=max(free, 24.0), free_gb=free, capability=cap)


def test_big_ampere_card_gets_bf16_big_batch_no_checkpointing():
    r = recommend_settings(gpu(23.5), resolution=768).settings
    assert r["training.mixed_precision"] == "bf16" and r["training.gradient_checkpointing"] is False
    assert r["training.train_batch_size"] == 6 and "optimizer.optimizer_type" not in r


def test_small_turing_card_gets_fp16_checkpointing_and_8bit_optimizer():
    rec = recommend_settings(gpu(7.5, cap=(7, 5), name="RTX 2070"), resolution=768, optimizer="Lion")
    r = rec.settings
    assert r["training.mixed_precision"] == "fp16" and "predates Ampere" in rec.reasons["training.mixed_precision"]
    assert r["training.gradient_checkpointing"] is True and r["training.train_batch_size"] == 2
    assert r["optimizer.optimizer_type"] == "Lion8bit" and "7.5 GB" in rec.reasons["optimizer.optimizer_type"]


def test_no_bitsandbytes_gives_the_install_hint_instead_of_8bit():
    rec = recommend_settings(gpu(6.0), resolution=768, optimizer="AdamW", bnb=False)
    assert "optimizer.optimizer_type" not in rec.settings
    assert "pip install bitsandbytes" in rec.reasons["optimizer.optimizer_type"]


def test_tiny_vram_drops_to_512_and_cpu_gets_fp32():
    assert recommend_settings(gpu(5.0), resolution=768).settings["dataset.resolution"] == "512,512"
    cpu = recommend_settings(None).settings
    assert cpu["training.device"] == "cpu" and cpu["training.mixed_precision"] == "no"


def test_config_new_for_hardware_writes_the_recommendation(tmp_path, monkeypatch, capsys):
    import trainer.hardware as hw

    monkeypatch.setattr(hw, "probe_gpu", lambda: gpu(11.0, cap=(8, 9), name="RTX 4070"))
    monkeypatch.setattr(hw, "bitsandbytes_available", lambda: True)
    out = tmp_path / "train.toml"
    assert main(["config", "new", "--for-hardware", "-o", str(out)]) == 0
    from trainer.config import load_config

    cfg = load_config(out, check=False)
    assert cfg.training.mixed_precision == "bf16" and cfg.training.train_batch_size == 2
    assert "RTX 4070" in capsys.readouterr().out


@pytest.fixture
def fake_machine(monkeypatch, tmp_path):
    """A CPU-only torch on a machine whose driver has an RTX 3090: the classic wrong install."""
    monkeypatch.setattr(doctor, "_torch", lambda: {"version": "2.13.0+cpu", "cuda": None,
                                                   "cuda_available": False, "sdpa": True})
    monkeypatch.setattr(doctor, "_nvidia_smi", lambda: Nvidia("580.65.06", (13, 0), ["NVIDIA RTX 3090"], (8, 6)))
    monkeypatch.setattr(doctor, "_gpu", lambda: None)
    monkeypatch.setattr(doctor, "_module_version", lambda name: None)
    monkeypatch.setattr(doctor, "_onnx_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(doctor, "_hf_cache_dir", lambda: str(tmp_path / "hf"))
    monkeypatch.setattr(doctor, "_hf_cached", lambda repo, f: repo.startswith("openai/"))
    monkeypatch.setattr(doctor, "_free_disk_gb", lambda p: 2.0)


def test_doctor_names_the_cpu_torch_on_a_gpu_machine_with_its_fix(fake_machine, capsys):
    checks = {c.name: c for c in doctor.run_checks("out")}
    assert checks["torch"].status == "missing" and "CPU build" in checks["torch"].detail
    assert "make torch" in checks["torch"].fix
    assert checks["clip-tokenizer"].status == "ok" and checks["tagger"].status == "warn"
    assert "hf download SmilingWolf/wd-swinv2-tagger-v3" in checks["tagger"].fix
    assert checks["disk"].status == "warn" and "output_dir" in checks["disk"].fix
    assert main(["doctor", "--json"]) == 1  # something required is missing
    data = json.loads(capsys.readouterr().out)
    assert {"name", "status", "detail", "fix"} <= set(data[0]) and any(d["name"] == "torch" for d in data)


def test_doctor_on_a_good_gpu_machine(fake_machine, monkeypatch, capsys):
    monkeypatch.setattr(doctor, "_torch", lambda: {"version": "2.13.0", "cuda": "13.0", "cuda_available": True,
                                                   "sdpa": True})
    monkeypatch.setattr(doctor, "_gpu", lambda: gpu(22.8, cap=(8, 6)))
    monkeypatch.setattr(doctor, "_module_version", lambda name: "0.45.0")
    monkeypatch.setattr(doctor, "_free_disk_gb", lambda p: 100.0)
    checks = {c.name: c for c in doctor.run_checks(".")}
    assert checks["torch"].status == "ok" and "22.8 of 24.0 GB" in checks["gpu"].detail
    assert checks["bf16"].status == "ok" and checks["bitsandbytes"].status == "ok"
    assert "onnxruntime-gpu" in checks["onnxruntime"].fix  # a GPU but only the CPU provider
    assert main(["doctor"]) == 0
    assert "RTX 3090" in capsys.readouterr().out

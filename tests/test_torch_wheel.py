"""The install path picks torch from a simulated `nvidia-smi` (trainer/torch_wheel.py, no torch needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from trainer.torch_wheel import (
    CPU_PIN,
    Nvidia,
    choose_torch,
    detect_nvidia,
    extras_commands,
    parse_nvidia_smi,
)

HEADER = """
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI {drv}              Driver Version: {drv}      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
|   0  NVIDIA GeForce RTX 3090        Off |   00000000:01:00.0 Off |                  N/A |
+-----------------------------------------+------------------------+----------------------+
"""


def smi(drv: str, cuda: str, query: str = "") -> Nvidia:
    n = parse_nvidia_smi(HEADER.format(drv=drv, cuda=cuda), query)
    assert n is not None
    return n


def test_parse_reads_driver_cuda_gpus_and_lowest_capability():
    n = smi("580.65.06", "13.0", "NVIDIA A100-SXM4-80GB, 8.0\nTesla V100-SXM2-16GB, 7.0\n")
    assert n.driver == "580.65.06" and n.cuda_version == (13, 0)
    assert n.gpus == ["NVIDIA A100-SXM4-80GB", "Tesla V100-SXM2-16GB"] and n.capability == (7, 0)
    assert parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.") is None


def test_new_driver_gets_the_tested_cuda_build():
    c = choose_torch(smi("580.65.06", "13.0", "NVIDIA RTX 4090, 8.9"), env={}, platform="linux")
    assert c.spec == CPU_PIN == "torch==2.13.0" and c.cuda == "13.0"  # PyPI's 2.13 on Linux is the CUDA 13.0 build
    assert "RTX 4090" in c.reason


def test_cuda12_driver_gets_the_newest_cuda12_torch_in_range():
    c = choose_torch(smi("550.54.14", "12.4", "NVIDIA RTX 3090, 8.6"), env={}, platform="linux")
    assert c.spec == "torch>=2.6,<2.7" and c.cuda == "12.4"
    c = choose_torch(smi("570.86.10", "12.8"), env={}, platform="linux")
    assert c.spec == "torch>=2.10,<2.11" and c.cuda == "12.8"


def test_old_gpus_get_a_build_that_still_has_their_architecture():
    pascal = choose_torch(smi("580.65.06", "13.0", "Tesla P100-PCIE-16GB, 6.0"), env={}, platform="linux")
    assert pascal.spec == "torch>=2.7,<2.8" and pascal.cuda == "12.6"
    volta = choose_torch(smi("580.65.06", "13.0", "Tesla V100, 7.0"), env={}, platform="linux")
    assert volta.spec == "torch>=2.10,<2.11"


def test_cpu_wheel_without_gpu_in_ci_and_for_too_old_drivers():
    assert choose_torch(None, env={}, platform="linux").cuda is None
    ci = choose_torch(smi("580.65.06", "13.0"), env={"CI": "true"}, platform="linux")
    assert ci.spec == CPU_PIN and ci.cuda is None and "CI" in ci.reason
    assert choose_torch(smi("580.65.06", "13.0"), env={"KAZARI_TORCH": "cpu"}, platform="linux").cuda is None
    old = choose_torch(smi("470.82.01", "11.4"), env={}, platform="linux")
    assert old.cuda is None and "update the NVIDIA driver" in old.reason


def test_detect_runs_nvidia_smi_only_when_present():
    calls = []

    def run(cmd):
        calls.append(cmd)
        return HEADER.format(drv="550.54.14", cuda="12.4") if cmd == ["nvidia-smi"] else "NVIDIA L4, 8.9\n"

    assert detect_nvidia(run=run, which=lambda name: None) is None and not calls
    n = detect_nvidia(run=run, which=lambda name: "/usr/bin/nvidia-smi")
    assert n.cuda_version == (12, 4) and n.gpus == ["NVIDIA L4"] and n.capability == (8, 9)


def test_extras_are_pinned_to_the_installed_torch_and_skipped_on_cpu():
    assert extras_commands("2.13.0", None) == []
    cmds = extras_commands("2.10.0", "12.8")
    assert [c[5] for c in cmds] == ["xformers", "bitsandbytes"] and all(c[6] == "torch==2.10.0" for c in cmds)


def test_module_runs_without_torch(tmp_path):
    """`make` runs it with the system Python before torch exists: a blocker on `import torch` proves it."""
    (tmp_path / "torch.py").write_text("raise ImportError('torch must not be imported')\n")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "trainer.torch_wheel", "--pip-args"], capture_output=True, text=True,
                         env={"PYTHONPATH": f"{tmp_path}:{root}", "CI": "true", "PATH": "/usr/bin:/bin"}, cwd=root,
                         check=True)
    assert out.stdout.strip() == CPU_PIN

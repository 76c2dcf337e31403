"""Pick the torch build for this machine before torch is installed (standard library only).

``python -m trainer.torch_wheel --pip-args`` prints what ``make`` passes to pip: on Linux with an
NVIDIA driver, the newest torch in the project's range whose PyPI wheel (a CUDA build there) the
driver and GPU can run; the CPU pin otherwise, and always in CI (``CI=true``) or with
``KAZARI_TORCH=cpu``. ``--extras`` then installs xformers and bitsandbytes only where pip finds a
release that works with the torch already installed (torch pinned, so pip never swaps it).

Facts behind ``PYPI_CUDA`` (the CUDA version of each release's default Linux wheel on PyPI):
2.4 cu121, 2.5-2.6 cu124, 2.7 cu126, 2.8-2.10 cu128, 2.11-2.13 cu130 (PyTorch's CUDA support-matrix
RFCs and release matrix; 2.14 moves to 13.2). A wheel needs a driver whose CUDA version (the one
``nvidia-smi`` prints) is at least the wheel's; CUDA 12.8 builds from 2.11 on and all CUDA 13
builds drop GPUs before Turing (compute capability 7.5), the 12.8 builds of 2.8-2.10 start at
Volta (7.0), older ones at Maxwell (5.0).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

CPU_PIN = "torch==2.13.0"  # what CI and CPU machines get (the project's tested version)
# (major, minor) -> (PyPI wheel CUDA version, oldest compute capability it runs on)
PYPI_CUDA: dict[tuple[int, int], tuple[tuple[int, int], tuple[int, int]]] = {
    (2, 4): ((12, 1), (5, 0)),
    (2, 5): ((12, 4), (5, 0)),
    (2, 6): ((12, 4), (5, 0)),
    (2, 7): ((12, 6), (5, 0)),
    (2, 8): ((12, 8), (7, 0)),
    (2, 9): ((12, 8), (7, 0)),
    (2, 10): ((12, 8), (7, 0)),
    (2, 11): ((13, 0), (7, 5)),
    (2, 12): ((13, 0), (7, 5)),
    (2, 13): ((13, 0), (7, 5)),
}
TESTED = (2, 13)  # preferred when the driver can run it: the version CI tests


@dataclass(frozen=True)
class Nvidia:
    driver: str
    cuda_version: tuple[int, int]
    gpus: list[str] = field(default_factory=list)
    capability: tuple[int, int] | None = None  # the lowest over the GPUs, when the driver reports it


@dataclass(frozen=True)
class Choice:
    spec: str  # the pip requirement, e.g. "torch==2.13.0" or "torch>=2.10,<2.11"
    cuda: str | None  # "13.0" for a CUDA build, None for the CPU pin
    reason: str


_CUDA_RE = re.compile(r"CUDA Version:\s*(\d+)\.(\d+)")
_DRIVER_RE = re.compile(r"Driver Version:\s*([\d.]+)")


def parse_nvidia_smi(header: str, query: str = "") -> Nvidia | None:
    """From plain ``nvidia-smi`` output (the header with the driver's CUDA version) and optionally
    ``nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader`` lines."""
    cuda = _CUDA_RE.search(header)
    if not cuda:
        return None
    driver = _DRIVER_RE.search(header)
    gpus: list[str] = []
    caps: list[tuple[int, int]] = []
    for line in query.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if not parts or not parts[0]:
            continue
        gpus.append(parts[0])
        m = re.match(r"(\d+)\.(\d+)", parts[1]) if len(parts) > 1 else None
        if m:
            caps.append((int(m.group(1)), int(m.group(2))))
    return Nvidia(driver=driver.group(1) if driver else "?", cuda_version=(int(cuda.group(1)), int(cuda.group(2))),
                  gpus=gpus, capability=min(caps) if caps else None)


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def detect_nvidia(run=_run, which=shutil.which) -> Nvidia | None:
    """The NVIDIA driver as ``nvidia-smi`` reports it; None without the tool or a working driver."""
    if which("nvidia-smi") is None:
        return None
    return parse_nvidia_smi(run(["nvidia-smi"]),
                            run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"]))


def choose_torch(nvidia: Nvidia | None, env: Mapping[str, str] | None = None,
                 platform: str = sys.platform) -> Choice:
    env = os.environ if env is None else env
    forced = env.get("KAZARI_TORCH", "").lower()
    if forced == "cpu":
        return Choice(CPU_PIN, None, "KAZARI_TORCH=cpu")
    if env.get("CI", "").lower() in ("1", "true", "yes") and forced != "cuda":
        return Choice(CPU_PIN, None, "CI: the CPU wheel")
    if nvidia is None:
        return Choice(CPU_PIN, None, "no NVIDIA driver (nvidia-smi) found: the CPU wheel")
    if not platform.startswith("linux"):
        return Choice(CPU_PIN, None, f"PyPI's torch on {platform} is a CPU build; see docs/first-run.md")
    order = [TESTED] + sorted((v for v in PYPI_CUDA if v != TESTED), reverse=True)
    for ver in order:
        cuda, min_cap = PYPI_CUDA[ver]
        if cuda > nvidia.cuda_version:
            continue
        if nvidia.capability is not None and nvidia.capability < min_cap:
            continue
        spec = CPU_PIN if ver == TESTED else f"torch>={ver[0]}.{ver[1]},<{ver[0]}.{ver[1] + 1}"
        gpu = nvidia.gpus[0] if nvidia.gpus else "NVIDIA GPU"
        return Choice(spec, f"{cuda[0]}.{cuda[1]}",
                      f"{gpu}, driver {nvidia.driver} (CUDA {nvidia.cuda_version[0]}.{nvidia.cuda_version[1]}): "
                      f"torch {ver[0]}.{ver[1]} with CUDA {cuda[0]}.{cuda[1]}")
    return Choice(CPU_PIN, None, f"driver {nvidia.driver} supports only CUDA {nvidia.cuda_version[0]}."
                  f"{nvidia.cuda_version[1]}, older than every torch wheel in range: update the NVIDIA driver "
                  "(CUDA 12.1 or newer), then re-run `make demo`; the CPU wheel meanwhile")


def extras_commands(torch_version: str, cuda: str | None) -> list[list[str]]:
    """pip commands for the optional GPU extras, each pinned to the installed torch."""
    if not cuda:
        return []
    pin = f"torch=={torch_version}"
    return [[sys.executable, "-m", "pip", "install", "-q", name, pin] for name in ("xformers", "bitsandbytes")]


def main(argv: list[str]) -> int:
    if "--extras" in argv:
        try:
            import torch
        except ImportError:
            print("kazari: torch is not installed; skipping extras", file=sys.stderr)
            return 0
        for cmd in extras_commands(torch.__version__.split("+")[0], torch.version.cuda):
            ok = subprocess.run(cmd, check=False).returncode == 0
            print(f"kazari: {cmd[5]} {'installed' if ok else 'skipped (no release for this torch)'}", file=sys.stderr)
        return 0
    choice = choose_torch(detect_nvidia())
    if "--pip-args" in argv:
        print(choice.spec)
        print(f"kazari: {choice.reason}", file=sys.stderr)
        return 0
    print(f"{choice.spec}  ({choice.reason})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

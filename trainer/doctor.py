"""`kazari doctor`: what this machine can do for training, each missing piece with its exact fix.

API (stable)::

    run_checks(output_dir=".") -> list[Check]     # never raises; torch etc. imported lazily
    Check(name, status, detail, fix)              # status "ok" | "warn" | "missing" | "info"

Every probe is a module-level function (``_torch``, ``_gpu``, ``_hf_cached``...) so tests replace
them with fakes; none touches the network.
"""

from __future__ import annotations

import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from trainer import hardware, torch_wheel

CLIP_REPO = "openai/clip-vit-large-patch14"
MIN_FREE_DISK_GB = 5.0  # LoRA saves (~75 MB each at dim 64), resumable states, the latent cache


@dataclass
class Check:
    name: str
    status: str  # "ok" | "warn" | "missing" | "info"
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


# ----------------------------------------------------------------------------------------- probes


def _torch() -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    sdpa = hasattr(torch.nn.functional, "scaled_dot_product_attention")
    return {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "sdpa": sdpa}


def _gpu() -> hardware.GpuInfo | None:
    try:
        return hardware.probe_gpu()
    except Exception:  # a broken driver must not break the report
        return None


def _nvidia_smi() -> torch_wheel.Nvidia | None:
    return torch_wheel.detect_nvidia()


def _module_version(name: str) -> str | None:
    if find_spec(name) is None:
        return None
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "installed"


def _onnx_providers() -> list[str] | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _hf_cached(repo: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename), str)


def _free_disk_gb(path: Path) -> float:
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / 2**30


# ----------------------------------------------------------------------------------------- checks


def run_checks(output_dir: Path | str = ".") -> list[Check]:
    out: list[Check] = []
    py = sys.version_info
    out.append(Check("python", "ok" if py >= (3, 10) else "missing",
                     f"Python {platform.python_version()} ({sys.executable})",
                     "" if py >= (3, 10) else "Install Python 3.10 or newer and re-run `make demo`."))

    t = _torch()
    smi = _nvidia_smi()
    gpu = _gpu() if t and t["cuda_available"] else None
    reinstall = "Run `make torch` (it installs the CUDA torch build this driver can run)"
    if t is None:
        out.append(Check("torch", "missing", "PyTorch is not installed", reinstall))
    elif smi and not t["cuda"]:
        out.append(Check("torch", "missing", f"torch {t['version']} is a CPU build but this machine has "
                         f"{smi.gpus[0] if smi.gpus else 'an NVIDIA GPU'} (driver CUDA {smi.cuda_version})",
                         reinstall))
    elif t["cuda"] and not t["cuda_available"]:
        out.append(Check("torch", "warn", f"torch {t['version']} (CUDA {t['cuda']}) sees no usable GPU",
                         "Check `nvidia-smi`; the driver must support CUDA " f"{t['cuda']} or newer."))
    else:
        out.append(Check("torch", "ok", f"torch {t['version']}" + (f" (CUDA {t['cuda']})" if t["cuda"] else
                                                                 " (CPU build; no NVIDIA GPU found)")))

    if gpu is not None:
        out.append(Check("gpu", "ok", f"{gpu.name}: {gpu.free_gb:.1f} of {gpu.total_gb:.1f} GB VRAM free, "
                         f"compute capability {gpu.capability[0]}.{gpu.capability[1]}"))
        out.append(Check("bf16", "ok" if gpu.bf16 else "info",
                         "bf16 supported (Ampere or newer)" if gpu.bf16 else "no bf16 before Ampere: use fp16",
                         "" if gpu.bf16 else "Set [training] mixed_precision = \"fp16\"."))
    else:
        out.append(Check("gpu", "warn", "no CUDA GPU: training runs on the CPU (fine for the demo only)",
                         "On a GPU server check `nvidia-smi`, then re-run `make demo`." if not smi else reinstall))

    if t is not None:
        out.append(Check("sdpa", "ok" if t["sdpa"] else "missing",
                         "PyTorch SDPA attention available" if t["sdpa"] else "torch has no SDPA",
                         "" if t["sdpa"] else "Install torch 2.x: " + reinstall))
    xf = _module_version("xformers")
    out.append(Check("xformers", "ok" if xf else "info", f"xformers {xf}" if xf else
                     "xformers not installed (optional; SDPA is as fast on torch 2)",
                     "" if xf or not gpu else "Run `make torch` (installs xformers when a release matches your torch)"))
    bnb = _module_version("bitsandbytes")
    out.append(Check("bitsandbytes", "ok" if bnb else ("warn" if gpu else "info"),
                     f"bitsandbytes {bnb} (8-bit optimizers)" if bnb else
                     "bitsandbytes not installed: no AdamW8bit/Lion8bit",
                     "" if bnb or not gpu else ".venv/bin/pip install bitsandbytes"))

    providers = _onnx_providers()
    if providers is None:
        out.append(Check("onnxruntime", "missing", "onnxruntime not installed (the tagger needs it)",
                         ".venv/bin/pip install onnxruntime"))
    else:
        cuda = "CUDAExecutionProvider" in providers
        out.append(Check("onnxruntime", "ok" if cuda or not gpu else "info",
                         "tagger providers: " + ", ".join(providers),
                         "" if cuda or not gpu else
                         "For GPU tagging: .venv/bin/pip uninstall -y onnxruntime && .venv/bin/pip install onnxruntime-gpu"))

    try:
        cache = _hf_cache_dir()
        out.append(Check("hf-cache", "info", f"Hugging Face cache: {cache} (set HF_HOME to move it)"))
        tok = _hf_cached(CLIP_REPO, "vocab.json") and _hf_cached(CLIP_REPO, "merges.txt")
        out.append(Check("clip-tokenizer", "ok" if tok else "warn",
                         f"{CLIP_REPO} tokenizer " + ("cached" if tok else "not cached"),
                         "" if tok else f"It downloads on the first run; offline: `hf download {CLIP_REPO} "
                         "vocab.json merges.txt tokenizer_config.json special_tokens_map.json "
                         "--local-dir models/clip-tokenizer` and set [model] tokenizer = \"models/clip-tokenizer\""))
        from tagging.tagger.models import DEFAULT_MODEL, KNOWN_MODELS, MODEL_FILE, WD14_TAGS

        repo = KNOWN_MODELS[DEFAULT_MODEL]
        tagger = _hf_cached(repo, MODEL_FILE) and _hf_cached(repo, WD14_TAGS)
        out.append(Check("tagger", "ok" if tagger else "warn",
                         f"default tagger {DEFAULT_MODEL} ({repo}) " + ("cached" if tagger else "not cached"),
                         "" if tagger else f"It downloads on first use; offline: `hf download {repo} {MODEL_FILE} "
                         f"{WD14_TAGS} --local-dir models/{DEFAULT_MODEL}` and pass --model models/{DEFAULT_MODEL}"))
    except ImportError:
        out.append(Check("hf-cache", "missing", "huggingface_hub not installed", ".venv/bin/pip install huggingface_hub"))

    out_dir = Path(output_dir).expanduser()
    free = _free_disk_gb(out_dir)
    out.append(Check("disk", "ok" if free >= MIN_FREE_DISK_GB else "warn",
                     f"{free:.1f} GB free for {out_dir}",
                     "" if free >= MIN_FREE_DISK_GB else
                     f"Free at least {MIN_FREE_DISK_GB:.0f} GB, or set [output] output_dir on a larger disk."))
    return out

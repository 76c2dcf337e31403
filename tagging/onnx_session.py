"""onnxruntime sessions and execution providers, shared by every ONNX model kazari runs."""

from __future__ import annotations

from pathlib import Path

from tagging.errors import UserError

DEVICES = ("auto", "cpu", "cuda")


def providers_for(device: str) -> list[str]:
    """CUDA when asked for (or on auto when onnxruntime-gpu sees a GPU), else CPU."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise UserError(f"--device {device!r} is not one of {', '.join(DEVICES)}.")
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise UserError(
            "--device cuda was asked for but this onnxruntime has no CUDA provider "
            f"(available: {', '.join(available)}).",
            hint="Install onnxruntime-gpu matching your CUDA version (pip install onnxruntime-gpu) "
            "or use --device cpu.",
        )
    if device == "cpu" or not has_cuda:
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def open_session(model_path: Path, device: str = "auto", threads: int | None = None, *,
                 what: str = "model", hint: str = "The file is missing, truncated or not an ONNX model."):
    """Load ``model_path``; a missing, truncated or non-ONNX file is a UserError naming ``what`` it is."""
    import onnxruntime as ort

    providers = providers_for(device)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # ORT warnings (e.g. unused initializers) are noise for users
    if not threads:
        from tagging.threads import thread_plan

        threads = thread_plan().onnx_intra  # one budget for torch, onnxruntime and OpenMP
    if threads:
        opts.intra_op_num_threads = threads
    # Idle ORT threads busy-wait by default, stealing the cores that decode/preprocess the next
    # batch; on a 16-core box this halved the pipeline's overhead (bench/tagger_bench.py).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
    except Exception as err:
        raise UserError(f"Cannot load the {what} {model_path}: {str(err).splitlines()[0][:300]}",
                        path=model_path, hint=hint) from None
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        # onnxruntime-gpu silently falls back to CPU when the driver or CUDA libraries are missing.
        raise UserError(
            "--device cuda was asked for but onnxruntime could not start CUDA (no GPU, driver or "
            "matching CUDA/cuDNN libraries).",
            hint="Check `nvidia-smi` and the onnxruntime-gpu install notes, or use --device cpu.",
        )
    return session

"""Where a tagger model comes from: a local folder, a Hugging Face repo id, or a short name.

Hugging Face models are fetched with huggingface_hub into its normal cache (so other tools
share the download); a cached copy is used without touching the network. Offline and not
cached gives a UserError that says exactly what to download and where to point ``--model``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tagging.errors import UserError
from tagging.hub import hf_offline, hub_files

MODEL_FILE = "model.onnx"
WD14_TAGS = "selected_tags.csv"
DD_TAGS = "tags.txt"

# Short name -> SmilingWolf repo (model cards: v3 = Danbooru to 2024-02, v2 = "WD 1.4").
KNOWN_MODELS: dict[str, str] = {
    "wd-swinv2-v3": "SmilingWolf/wd-swinv2-tagger-v3",
    "wd-convnext-v3": "SmilingWolf/wd-convnext-tagger-v3",
    "wd-vit-v3": "SmilingWolf/wd-vit-tagger-v3",
    "wd-vit-large-v3": "SmilingWolf/wd-vit-large-tagger-v3",
    "wd-eva02-large-v3": "SmilingWolf/wd-eva02-large-tagger-v3",
    "wd-moat-v2": "SmilingWolf/wd-v1-4-moat-tagger-v2",
    "wd-convnext-v2": "SmilingWolf/wd-v1-4-convnext-tagger-v2",
    "wd-convnextv2-v2": "SmilingWolf/wd-v1-4-convnextv2-tagger-v2",
    "wd-swinv2-v2": "SmilingWolf/wd-v1-4-swinv2-tagger-v2",
    "wd-vit-v2": "SmilingWolf/wd-v1-4-vit-tagger-v2",
}
DEFAULT_MODEL = "wd-swinv2-v3"
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class ModelFiles:
    """A resolved model: its files and a stable id for the score cache."""

    model_path: Path
    labels_path: Path
    name: str  # what the user asked for, for messages
    model_id: str  # "<readable>-<fingerprint>", safe as a folder name


def fingerprint(*paths: Path) -> str:
    """Cheap content fingerprint: sizes + first/last MiB of each file (a 1 GB model in ~ms).

    A replaced model.onnx or tag list changes it, so cached scores are never reused for a
    different model; a full hash of 1.2 GB on every run would cost seconds for nothing.
    """
    h = hashlib.sha256()
    for path in paths:
        size = path.stat().st_size
        h.update(str(size).encode())
        with path.open("rb") as f:
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def _readable(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_")[-60:] or "model"


def _from_folder(folder: Path, name: str) -> ModelFiles:
    model = folder / MODEL_FILE
    if not model.is_file():
        onnx = sorted(folder.glob("*.onnx"))
        if len(onnx) != 1:
            raise UserError(
                f"The model folder {folder} has no {MODEL_FILE}"
                + (f" (and {len(onnx)} other .onnx files, so kazari cannot guess)." if onnx else "."),
                path=folder,
                hint="A tagger folder holds model.onnx and selected_tags.csv (WD14) or tags.txt "
                "(DeepDanbooru), as downloaded from the model's Hugging Face repository.",
            )
        model = onnx[0]
    for tags_name in (WD14_TAGS, DD_TAGS):
        tags = folder / tags_name
        if tags.is_file():
            break
    else:
        raise UserError(
            f"The model folder {folder} has {model.name} but no {WD14_TAGS} (or {DD_TAGS}); without "
            "it the scores cannot be named.",
            path=folder,
            hint="Download selected_tags.csv from the same repository as the model into that folder.",
        )
    return ModelFiles(model, tags, name, f"{_readable(folder.name)}-{fingerprint(model, tags)}")


def _hf_offline() -> bool:
    return hf_offline()


def _download_hint(repo: str) -> str:
    short = repo.split("/")[-1]
    return (
        f"On a machine with network access run `hf download {repo} {MODEL_FILE} {WD14_TAGS} "
        f"--local-dir models/{short}` (or fetch both files from https://huggingface.co/{repo}), "
        f"copy the folder here and pass `--model models/{short}`."
    )


def _from_hub(repo: str, name: str, cache_dir: Path | None) -> ModelFiles:
    paths = hub_files(repo, (MODEL_FILE, WD14_TAGS), name=name, hint=_download_hint(repo),
                      cache_dir=cache_dir, offline=lambda: _hf_offline())
    snapshot = paths[0].parent.name[:12]  # commit hash of the snapshot folder
    return ModelFiles(paths[0], paths[1], name, f"{_readable(repo)}-{snapshot}-{fingerprint(*paths)}")


def resolve_model(spec: str | Path, *, cache_dir: Path | None = None) -> ModelFiles:
    """``--model`` value -> model files (local path, known short name or ``owner/name`` repo id)."""
    text = str(spec).strip()
    if not text:
        raise UserError("No tagger model given.", hint=f"Pass --model with a folder or one of: {', '.join(KNOWN_MODELS)}.")
    path = Path(text).expanduser()
    if path.is_dir():
        return _from_folder(path.resolve(), text)
    if path.is_file():
        if path.suffix.lower() != ".onnx":
            raise UserError(f"--model {text} is a file but not an .onnx model.", path=path,
                            hint="Pass the folder holding model.onnx and selected_tags.csv.")
        files = _from_folder(path.resolve().parent, text)
        return ModelFiles(path.resolve(), files.labels_path, text,
                          f"{_readable(path.stem)}-{fingerprint(path.resolve(), files.labels_path)}")
    if text in KNOWN_MODELS:
        return _from_hub(KNOWN_MODELS[text], text, cache_dir)
    if _REPO_ID.match(text) and not text.startswith((".", "/")) and not path.parent.exists():
        return _from_hub(text, text, cache_dir)
    raise UserError(
        f"--model {text!r} is neither an existing folder nor a known tagger name.",
        path=text,
        hint=f"Use a folder with model.onnx + selected_tags.csv, a Hugging Face repo id such as "
        f"SmilingWolf/wd-swinv2-tagger-v3, or a short name: {', '.join(KNOWN_MODELS)}.",
    )

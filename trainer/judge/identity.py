"""Optional identity metric: CCIP (deepghs' Contrastive Character Image Pretraining) via onnxruntime.

A CCIP model folder (Hugging Face repo ``deepghs/ccip_onnx``, one sub-folder per variant) holds
``model_feat.onnx`` (image -> feature vector), ``model_metrics.onnx`` (features (N, D) -> pairwise
differences (N, N)) and ``metrics.json`` (its ``threshold``: a difference below it means "same
character"). An image's identity score is the share of training images it is the same character
as, divided by the training set's own share among itself (the "upper bound"), clipped to 1.

Input: RGB resized to 384x384 (bilinear), 0..1, normalised with CLIP's mean/std, NCHW.
Downloads go through the huggingface_hub cache; offline, a clear UserError says what to fetch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tagging.errors import UserError

CCIP_REPO = "deepghs/ccip_onnx"
DEFAULT_CCIP = "ccip-caformer-24-randaug-pruned"
CCIP_FILES = ("model_feat.onnx", "model_metrics.onnx", "metrics.json")
SIZE = 384
_MEAN = np.asarray([0.48145466, 0.4578275, 0.40821073], np.float32)
_STD = np.asarray([0.26862954, 0.26130258, 0.27577711], np.float32)


def resolve_ccip(model: str | Path = DEFAULT_CCIP, cache_dir: Path | None = None) -> Path:
    """A folder with the three CCIP files: a local folder as is, else a variant of deepghs/ccip_onnx."""
    local = Path(model).expanduser()
    if local.is_dir():
        missing = [f for f in CCIP_FILES if not (local / f).is_file()]
        if missing:
            raise UserError(f"The CCIP folder {local} lacks {', '.join(missing)}.", path=local,
                            hint=f"A CCIP folder holds {', '.join(CCIP_FILES)}.")
        return local
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    paths = []
    for name in CCIP_FILES:
        try:
            paths.append(Path(hf_hub_download(CCIP_REPO, f"{model}/{name}", cache_dir=cache_dir,
                                              local_files_only=offline)))
        except LocalEntryNotFoundError:
            raise UserError(
                f"The CCIP identity model {CCIP_REPO}/{model} is not in the Hugging Face cache and cannot be "
                "downloaded (offline or no network).",
                hint=f"On a machine with network access run `hf download {CCIP_REPO} --include '{model}/*' "
                f"--local-dir models/ccip`, copy it here and set [judge] ccip_model = \"models/ccip/{model}\"; "
                "or set [judge] identity = false.",
            ) from None
        except Exception as err:  # repository or file not found, HTTP errors
            raise UserError(f"Cannot fetch {CCIP_REPO}/{model}/{name}: {str(err).splitlines()[0][:200]}",
                            hint="Check [judge] ccip_model (a variant name of deepghs/ccip_onnx or a folder).") from None
    return paths[0].parent


def preprocess(image) -> np.ndarray:
    """PIL image -> (3, 384, 384) float32, CLIP-normalised."""
    from PIL import Image

    rgb = image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    data = np.asarray(rgb, dtype=np.float32) / 255.0
    return ((data - _MEAN) / _STD).transpose(2, 0, 1).astype(np.float32)


class CCIP:
    """A loaded CCIP model pair (feature extractor + metric)."""

    def __init__(self, folder: Path) -> None:
        from tagging.tagger.runtime import open_session

        self.folder = folder
        self.feat = open_session(folder / "model_feat.onnx", "cpu")
        self.metric = open_session(folder / "model_metrics.onnx", "cpu")
        try:
            self.threshold = float(json.loads((folder / "metrics.json").read_text(encoding="utf-8"))["threshold"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"{folder / 'metrics.json'} has no readable `threshold` ({err}).",
                            path=folder / "metrics.json") from None

    def features(self, images: Sequence) -> np.ndarray:
        batch = np.stack([preprocess(im) for im in images])
        name = self.feat.get_inputs()[0].name
        return np.asarray(self.feat.run(None, {name: batch})[0], dtype=np.float32)

    def differences(self, feats: np.ndarray) -> np.ndarray:
        name = self.metric.get_inputs()[0].name
        return np.asarray(self.metric.run(None, {name: feats.astype(np.float32)})[0], dtype=np.float32)

    def identity_scores(self, generated: Sequence, training: Sequence) -> list[float]:
        """Per generated image: share of training images judged the same character, / upper bound."""
        if not training:
            raise UserError("The identity metric needs training images; none were found.",
                            hint="Check [dataset] train_data_dir, or set [judge] identity = false.")
        ref = self.features(training)
        gen = self.features(generated)
        diff = self.differences(np.concatenate([ref, gen]))
        n = len(ref)
        same = diff < self.threshold
        ref_block = same[:n, :n]
        off_diag = ~np.eye(n, dtype=bool)
        upper = float(ref_block[off_diag].mean()) if n > 1 else 1.0
        upper = upper if upper > 0 else 1.0
        return [min(1.0, float(same[n + i, :n].mean()) / upper) for i in range(len(gen))]

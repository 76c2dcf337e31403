"""``kazari demo``: a complete example workspace that runs the whole loop on a CPU in minutes.

Layout (paths in ``kazari.toml`` are relative, so the folder can be moved)::

    kazari-demo/
      kazari.toml            quick-test preset pointing at the parts below
      dataset/10_kazari/     synthetic character: fixed pink hair + hair flower, varying poses,
                             booru captions with a few deliberate mistakes to fix
      models/tiny-sd/        tiny random SD1 model (diffusers folder)
      models/tagger/         tiny ONNX tagger that recognises the synthetic features
      output/                LoRA files and samples (created by training)

Re-running reuses what exists: nothing the user changed is overwritten.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tui.workspace import CONFIG_NAME

TRIGGER = "kazari"
DEMO_IMAGES = 24
DEMO_REPEATS = 2  # few repeats keep a CPU epoch short; real characters use ~10
SAMPLE_PROMPT = f"{TRIGGER}, 1girl, solo, smile --n lowres, bad anatomy --w 64 --h 64 --s 8 --l 6 --d 1234"


def create_demo(folder: Path | str, progress: Callable[[str], None] = lambda _msg: None) -> Path:
    """Create (or complete) the demo workspace in ``folder``; returns the config path."""
    root = Path(folder).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    dataset = root / "dataset"
    if not any(dataset.glob("*_*/*.png")):
        from tagging.synthetic import make_character_dataset

        progress(f"drawing {DEMO_IMAGES} synthetic character images in {dataset}")
        make_character_dataset(dataset, n_images=DEMO_IMAGES, trigger=TRIGGER, repeats=DEMO_REPEATS, size=256)
    tagger = root / "models" / "tagger"
    if not (tagger / "model.onnx").is_file():
        from tagging.tagger.tiny import build_tiny_tagger

        progress(f"building the tiny tagger in {tagger}")
        build_tiny_tagger(tagger)
    model = root / "models" / "tiny-sd"
    if not (model / "model_index.json").is_file():
        from trainer.tiny import make_tiny_sd

        progress(f"building a tiny random SD1 model in {model}")
        make_tiny_sd(model)
    config = root / CONFIG_NAME
    if not config.is_file():
        progress(f"writing {config} (quick-test preset)")
        write_demo_config(config)
    return config


def write_demo_config(path: Path) -> None:
    from trainer.config import preset
    from trainer.config.document import ConfigDocument

    cfg = preset(
        "quick-test",
        model={"pretrained_model": Path("models/tiny-sd")},
        dataset={"train_data_dir": Path("dataset")},
        output={"output_dir": Path("output"), "output_name": TRIGGER},
        sample={"sample_prompts": [SAMPLE_PROMPT], "sample_every_n_epochs": 1},
    )
    header = (
        "kazari demo: the quick-test preset on a synthetic character and a tiny random SD1 model.\n"
        "Every path is relative to this file. Edit it in the Config screen (4) or any editor."
    )
    ConfigDocument.new(path, cfg, header=header).save()

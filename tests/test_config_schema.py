"""Schema, defaults, presets and field metadata of the training config."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tagging.errors import UserError
from trainer.config import PRESETS, ConfigError, TrainConfig, field_spec, field_specs, preset
from trainer.config.loading import parse_config_text
from trainer.config.render import render_toml

# The names docs/architecture.md promises to the trainer and the TUI.
ARCHITECTURE_KEYS = {
    "model": ["pretrained_model", "vae", "tokenizer", "use_ema"],
    "dataset": ["train_data_dir", "reg_data_dir", "resolution", "caption_extension", "shuffle_caption",
                "keep_tokens", "caption_dropout_rate", "caption_tag_dropout_rate",
                "caption_dropout_every_n_epochs", "flip_aug", "enable_bucket", "min_bucket_reso",
                "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale", "cache_latents",
                "max_data_loader_n_workers", "persistent_data_loader_workers", "prior_loss_weight",
                "max_token_length"],
    "network": ["network_dim", "network_alpha", "conv_dim", "conv_alpha", "network_weights", "train_unet_only",
                "train_text_encoder_only"],
    "optimizer": ["optimizer_type", "optimizer_args", "learning_rate", "unet_lr", "text_encoder_lr",
                  "lr_scheduler", "lr_warmup_steps", "lr_scheduler_num_cycles", "lr_scheduler_power",
                  "max_grad_norm"],
    "training": ["max_train_epochs", "train_batch_size", "gradient_accumulation_steps", "mixed_precision", "seed",
                 "clip_skip", "attention", "gradient_checkpointing", "noise_offset", "min_snr_gamma", "device",
                 "compile"],
    "output": ["output_dir", "output_name", "save_model_as", "save_precision", "save_every_n_epochs", "save_state"],
    "sample": ["sample_prompts", "sample_every_n_epochs", "sample_sampler"],
    "logging": ["logging_dir"],
    "judge": ["prompts", "seed_count", "tagger", "general_threshold", "leak_share", "beta", "leak_penalty",
              "identity", "ccip_model", "validation_images", "validation_timesteps"],
}


def test_sections_and_names_follow_the_architecture_contract() -> None:
    keys = [s.key for s in field_specs()]
    expected = [f"{section}.{name}" for section, names in ARCHITECTURE_KEYS.items() for name in names]
    assert keys == expected


def test_every_field_has_a_description_and_a_unit_unless_boolean() -> None:
    for spec in field_specs():
        assert spec.description.endswith(".") or spec.description.endswith(")"), spec.key
        assert len(spec.description) > 10, spec.key
        if spec.kind != "bool":
            assert spec.unit, f"{spec.key} has no unit/range text"


def test_field_metadata_for_forms() -> None:
    lr = field_spec("optimizer.lr_scheduler")
    assert lr.kind == "choice"
    assert set(lr.choices) == {"linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                               "constant_with_warmup"}
    dim = field_spec("network.network_dim")
    assert (dim.kind, dim.minimum, dim.maximum) == ("int", 1, 1024)
    assert field_spec("model.vae").kind == "path" and field_spec("model.vae").optional
    assert field_spec("dataset.resolution").kind == "resolution"
    assert field_spec("network.train_unet_only").sd_scripts == "--network_train_unet_only"
    assert set(field_spec("optimizer.optimizer_type").choices) >= {"AdamW", "AdamW8bit", "Lion", "Lion8bit",
                                                                   "Prodigy", "SGD"}
    assert field_spec("training.mixed_precision").choices == ("no", "fp16", "bf16")
    assert field_spec("output.save_model_as").choices == ("safetensors", "ckpt", "pt")
    assert field_spec("dataset.max_token_length").choices == (75, 150, 225)
    assert field_spec("training.attention").default == "sdpa"


def test_defaults_are_the_seed_recipe_and_equal_the_anime_preset() -> None:
    cfg = TrainConfig()
    assert cfg == preset("anime-character")
    d, n, o, t, out = cfg.dataset, cfg.network, cfg.optimizer, cfg.training, cfg.output
    assert d.resolution_wh == (768, 768)
    assert t.train_batch_size == 2 and t.max_train_epochs == 10 and out.save_every_n_epochs == 1
    assert n.network_dim == 64 and n.network_alpha == 32
    assert t.clip_skip == 2
    assert (o.learning_rate, o.unet_lr, o.text_encoder_lr) == (5e-5, 5e-5, 6e-6)
    assert o.lr_scheduler == "cosine_with_restarts" and o.lr_scheduler_num_cycles == 1
    assert o.lr_warmup_steps == 50 and o.optimizer_type == "Lion"
    assert t.mixed_precision == "fp16" and out.save_precision == "fp16" and t.seed == 1337
    assert d.cache_latents == "memory" and d.max_token_length == 225
    assert d.caption_extension == ".txt" and d.shuffle_caption
    assert (d.min_bucket_reso, d.max_bucket_reso) == (256, 1024)
    assert d.keep_tokens == 1


def test_low_vram_and_quick_test_presets() -> None:
    low = preset("low-vram")
    assert low.dataset.resolution_wh == (512, 512)
    assert low.training.train_batch_size == 1 and low.training.gradient_checkpointing
    q = preset("quick-test")
    assert 64 <= q.dataset.resolution_wh[0] <= 128
    assert q.network.network_dim == 4 and q.training.max_train_epochs == 2
    assert q.training.train_batch_size == 1 and q.training.device == "auto"
    assert set(PRESETS) == {"anime-character", "low-vram", "quick-test"}


def test_preset_overrides_and_unknown_preset() -> None:
    cfg = preset("quick-test", dataset={"train_data_dir": "data"}, training={"max_train_epochs": 3})
    assert cfg.dataset.train_data_dir == Path("data") and cfg.training.max_train_epochs == 3
    assert cfg.network.network_dim == 4
    with pytest.raises(UserError, match="low-vram"):
        preset("tiny")


@pytest.mark.parametrize("value, expected", [
    (512, "512,512"), ("512", "512,512"), ("512,768", "512,768"), ("512, 768", "512,768"),
    ([640, 512], "640,512"), ("640x512", "640,512"),
])
def test_resolution_forms_normalise_to_w_h(value: object, expected: str) -> None:
    cfg = TrainConfig.model_validate({"dataset": {"resolution": value}})
    assert cfg.dataset.resolution == expected


def test_types_are_strict_when_reading() -> None:
    with pytest.raises(ValidationError):
        TrainConfig.model_validate({"network": {"network_dim": "64"}})
    with pytest.raises(ValidationError):
        TrainConfig.model_validate({"dataset": {"shuffle_caption": 1}})
    # an integer is a fine float, and choices are case-blind like sd-scripts
    cfg = TrainConfig.model_validate({"network": {"network_alpha": 16}, "optimizer": {"optimizer_type": "adamw8bit"}})
    assert cfg.network.network_alpha == 16.0 and cfg.optimizer.optimizer_type == "AdamW8bit"


def test_warmup_accepts_steps_or_a_fraction() -> None:
    assert TrainConfig.model_validate({"optimizer": {"lr_warmup_steps": 0.1}}).optimizer.lr_warmup_steps == 0.1
    assert TrainConfig.model_validate({"optimizer": {"lr_warmup_steps": 20.0}}).optimizer.lr_warmup_steps == 20
    with pytest.raises(ValidationError):
        TrainConfig.model_validate({"optimizer": {"lr_warmup_steps": 1.5}})


def test_get_with_value_and_resolve_paths(tmp_path: Path) -> None:
    cfg = preset("anime-character", model={"pretrained_model": "m/base.safetensors"},
                 dataset={"train_data_dir": "/abs/data"}, sample={"sample_prompts": "prompts.txt"})
    assert cfg.get("optimizer.learning_rate") == 5e-5
    changed = cfg.with_value("optimizer.learning_rate", 1e-4)
    assert changed.optimizer.learning_rate == 1e-4 and cfg.optimizer.learning_rate == 5e-5
    resolved = cfg.resolve_paths(tmp_path)
    assert resolved.model.pretrained_model == tmp_path / "m/base.safetensors"
    assert resolved.dataset.train_data_dir == Path("/abs/data")
    assert resolved.output.output_dir == tmp_path / "output"
    assert resolved.sample.sample_prompts == tmp_path / "prompts.txt"
    with pytest.raises(KeyError):
        cfg.get("optimizer.lr")


def test_rendered_toml_reads_back_equal_for_every_preset() -> None:
    for name in PRESETS:
        cfg = preset(name, sample={"sample_prompts": ["kazari, 1girl --w 512 --h 768", "kazari, smile"]},
                     optimizer={"optimizer_args": {"weight_decay": 0.01, "betas": [0.9, 0.99]}})
        text = render_toml(cfg, header="test")
        back, issues = parse_config_text(text)
        assert issues == [] and back == cfg, name
        # unset keys are shown as commented examples, help text as comments
        assert "# vae = " in text and "# Base SD 1.x model" in text


def test_config_error_is_a_user_error() -> None:
    assert issubclass(ConfigError, UserError)

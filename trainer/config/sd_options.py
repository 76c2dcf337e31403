"""The one table of sd-scripts option names for kazari's config keys.

Import and export (``trainer.config.kohya``), the generated manual (``docs/config.md``), the schema's
``FieldSpec.sd_scripts`` and the Config screen's help line all read it, so a key's sd-scripts
spelling is written once. Names follow sd-scripts' ``train_network.py`` / ``library/train_util.py``.
"""

from __future__ import annotations

# kazari key -> (sd-scripts option, section of the exported --config_file) for 1:1 options.
DIRECT: dict[str, tuple[str, str]] = {
    "model.pretrained_model": ("pretrained_model_name_or_path", "model_arguments"),
    "model.vae": ("vae", "model_arguments"),
    "dataset.train_data_dir": ("train_data_dir", "dataset_arguments"),
    "dataset.reg_data_dir": ("reg_data_dir", "dataset_arguments"),
    "dataset.resolution": ("resolution", "dataset_arguments"),
    "dataset.caption_extension": ("caption_extension", "dataset_arguments"),
    "dataset.shuffle_caption": ("shuffle_caption", "dataset_arguments"),
    "dataset.keep_tokens": ("keep_tokens", "dataset_arguments"),
    "dataset.caption_dropout_rate": ("caption_dropout_rate", "dataset_arguments"),
    "dataset.caption_tag_dropout_rate": ("caption_tag_dropout_rate", "dataset_arguments"),
    "dataset.caption_dropout_every_n_epochs": ("caption_dropout_every_n_epochs", "dataset_arguments"),
    "dataset.flip_aug": ("flip_aug", "dataset_arguments"),
    "dataset.enable_bucket": ("enable_bucket", "dataset_arguments"),
    "dataset.min_bucket_reso": ("min_bucket_reso", "dataset_arguments"),
    "dataset.max_bucket_reso": ("max_bucket_reso", "dataset_arguments"),
    "dataset.bucket_reso_steps": ("bucket_reso_steps", "dataset_arguments"),
    "dataset.bucket_no_upscale": ("bucket_no_upscale", "dataset_arguments"),
    "dataset.max_data_loader_n_workers": ("max_data_loader_n_workers", "dataset_arguments"),
    "dataset.persistent_data_loader_workers": ("persistent_data_loader_workers", "dataset_arguments"),
    "dataset.prior_loss_weight": ("prior_loss_weight", "dataset_arguments"),
    "network.network_dim": ("network_dim", "additional_network_arguments"),
    "network.network_alpha": ("network_alpha", "additional_network_arguments"),
    "network.network_weights": ("network_weights", "additional_network_arguments"),
    "network.train_unet_only": ("network_train_unet_only", "additional_network_arguments"),
    "network.train_text_encoder_only": ("network_train_text_encoder_only", "additional_network_arguments"),
    "optimizer.unet_lr": ("unet_lr", "additional_network_arguments"),
    "optimizer.text_encoder_lr": ("text_encoder_lr", "additional_network_arguments"),
    "optimizer.optimizer_type": ("optimizer_type", "optimizer_arguments"),
    "optimizer.learning_rate": ("learning_rate", "optimizer_arguments"),
    "optimizer.lr_scheduler": ("lr_scheduler", "optimizer_arguments"),
    "optimizer.lr_warmup_steps": ("lr_warmup_steps", "optimizer_arguments"),
    "optimizer.lr_scheduler_num_cycles": ("lr_scheduler_num_cycles", "optimizer_arguments"),
    "optimizer.lr_scheduler_power": ("lr_scheduler_power", "optimizer_arguments"),
    "optimizer.max_grad_norm": ("max_grad_norm", "optimizer_arguments"),
    "training.max_train_epochs": ("max_train_epochs", "training_arguments"),
    "training.train_batch_size": ("train_batch_size", "training_arguments"),
    "training.gradient_accumulation_steps": ("gradient_accumulation_steps", "training_arguments"),
    "training.mixed_precision": ("mixed_precision", "training_arguments"),
    "training.seed": ("seed", "training_arguments"),
    "training.clip_skip": ("clip_skip", "training_arguments"),
    "training.gradient_checkpointing": ("gradient_checkpointing", "training_arguments"),
    "output.output_dir": ("output_dir", "saving_arguments"),
    "output.output_name": ("output_name", "saving_arguments"),
    "output.save_model_as": ("save_model_as", "saving_arguments"),
    "output.save_precision": ("save_precision", "saving_arguments"),
    "output.save_state": ("save_state", "saving_arguments"),
    "sample.sample_sampler": ("sample_sampler", "sample_prompt_arguments"),
    "logging.logging_dir": ("logging_dir", "logging_arguments"),
}
# Options whose "off" value in kazari (0) is "not given" (None) in sd-scripts.
ZERO_IS_UNSET: dict[str, tuple[str, str]] = {
    "training.noise_offset": ("noise_offset", "training_arguments"),
    "training.min_snr_gamma": ("min_snr_gamma", "training_arguments"),
    "output.save_every_n_epochs": ("save_every_n_epochs", "saving_arguments"),
    "sample.sample_every_n_epochs": ("sample_every_n_epochs", "sample_prompt_arguments"),
}
SD_TO_KAZARI = {sd: key for key, (sd, _) in {**DIRECT, **ZERO_IS_UNSET}.items()}
# kazari-only keys carried in the [kazari] table of the exported config.
KAZARI_ONLY = ("model.tokenizer", "training.device")

# Keys sd-scripts spells in a way no single option name says (flags, network_args, files).
SPECIAL: dict[str, str] = {
    "dataset.cache_latents": "--cache_latents / --cache_latents_to_disk",
    "dataset.max_token_length": "--max_token_length (75 = unset)",
    "network.conv_dim": '--network_args "conv_dim=N"',
    "network.conv_alpha": '--network_args "conv_alpha=N"',
    "optimizer.optimizer_args": '--optimizer_args "k=v" ...',
    "training.attention": "--sdpa / --xformers flags",
    "sample.sample_prompts": "--sample_prompts (a file)",
}


def sd_option(key: str) -> str | None:
    """The sd-scripts option that carries ``key`` one to one, or None."""
    for table in (DIRECT, ZERO_IS_UNSET):
        if key in table:
            return table[key][0]
    return None


def sd_label(key: str) -> str | None:
    """How sd-scripts spells ``key`` for a person (``--unet_lr``), or None when it has no such option."""
    name = sd_option(key)
    if name is not None:
        return f"--{name}"
    return SPECIAL.get(key)

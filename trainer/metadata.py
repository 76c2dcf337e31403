"""``ss_*`` training metadata, with sd-scripts' key names and value formats.

Civitai, A1111's LoRA info panel and metadata viewers read these keys, so they follow
``train_network.py`` exactly: every value is a string (``str(None) == "None"``), dataset info is
JSON, ``ss_resolution`` is the string of a ``(w, h)`` tuple, ``ss_optimizer`` is
``module.Class(key=value,...)``. Per-save keys (``ss_steps``, ``ss_epoch``,
``ss_training_finished_at``) are added by :func:`for_save`. ``sshs_model_hash`` and
``sshs_legacy_hash`` are computed over the written tensors by ``LoRANetwork.save``
(``trainer.lora.safetensors_hashes``).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import torch


def optimizer_description(optimizer: torch.optim.Optimizer, args: dict[str, Any]) -> str:
    cls = type(optimizer)
    name = f"{cls.__module__}.{cls.__name__}"
    text = ",".join(f"{k}={v}" for k, v in args.items())
    return name + (f"({text})" if text else "")


def _s(value: Any) -> str:
    return str(value)


def training_metadata(cfg, data, bundle, *, optimizer_text: str, num_batches_per_epoch: int,
                      max_train_steps: int, seed: int, world_size: int = 1,
                      started_at: float | None = None, session_id: int | None = None) -> dict[str, str]:
    """The run-constant part of the metadata (``data``: a DataPipeline, ``bundle``: an SD1Bundle)."""
    d, n, o, t, out = cfg.dataset, cfg.network, cfg.optimizer, cfg.training, cfg.output
    w, h = d.resolution_wh
    unet_lr, te_lr = o.effective_unet_lr, o.effective_text_encoder_lr
    num_train = sum(im.repeats for im in data.images if not im.is_reg)
    num_reg = sum(im.repeats for im in data.images if im.is_reg)
    net_args: dict[str, str] = {}
    if n.conv_dim:
        net_args["conv_dim"] = str(n.conv_dim)
        net_args["conv_alpha"] = str(n.conv_alpha if n.conv_alpha is not None else n.conv_dim)
    md: dict[str, Any] = {
        "ss_session_id": session_id if session_id is not None else random.randint(0, 2**32),
        "ss_training_started_at": started_at if started_at is not None else time.time(),
        "ss_output_name": out.output_name,
        "ss_learning_rate": o.learning_rate,
        "ss_text_encoder_lr": te_lr,
        "ss_unet_lr": unet_lr,
        "ss_num_train_images": num_train,
        "ss_num_reg_images": num_reg,
        "ss_num_batches_per_epoch": num_batches_per_epoch,
        "ss_num_epochs": t.max_train_epochs,
        "ss_gradient_checkpointing": t.gradient_checkpointing,
        "ss_gradient_accumulation_steps": t.gradient_accumulation_steps,
        "ss_max_train_steps": max_train_steps,
        "ss_lr_warmup_steps": o.lr_warmup_steps,
        "ss_lr_scheduler": o.lr_scheduler,
        "ss_network_module": "networks.lora",
        "ss_network_dim": n.network_dim,
        "ss_network_alpha": n.network_alpha,
        "ss_network_dropout": None,
        "ss_mixed_precision": t.mixed_precision,
        "ss_full_fp16": False,
        "ss_v2": False,
        "ss_base_model_version": "sd_v1",
        "ss_clip_skip": t.clip_skip,
        "ss_max_token_length": d.max_token_length,
        "ss_cache_latents": d.cache_latents != "off",
        "ss_seed": seed,
        "ss_lowram": False,
        "ss_noise_offset": t.noise_offset or None,
        "ss_adaptive_noise_scale": None,
        "ss_zero_terminal_snr": False,
        "ss_training_comment": None,
        "ss_sd_scripts_commit_hash": "kazari",
        "ss_optimizer": optimizer_text,
        "ss_max_grad_norm": o.max_grad_norm,
        "ss_caption_dropout_rate": d.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": d.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": d.caption_tag_dropout_rate,
        "ss_face_crop_aug_range": None,
        "ss_prior_loss_weight": d.prior_loss_weight,
        "ss_min_snr_gamma": t.min_snr_gamma or None,
        "ss_scale_weight_norms": None,
        "ss_loss_type": "l2",
        # dataset (the no-dataset_config branch of sd-scripts)
        "ss_batch_size_per_device": t.train_batch_size,
        "ss_total_batch_size": t.train_batch_size * t.gradient_accumulation_steps * world_size,
        "ss_resolution": (w, h),
        "ss_color_aug": False,
        "ss_flip_aug": d.flip_aug,
        "ss_random_crop": False,
        "ss_shuffle_caption": d.shuffle_caption,
        "ss_enable_bucket": d.enable_bucket,
        "ss_bucket_no_upscale": d.bucket_no_upscale,
        "ss_min_bucket_reso": d.min_bucket_reso,
        "ss_max_bucket_reso": d.max_bucket_reso,
        "ss_keep_tokens": d.keep_tokens,
        "ss_dataset_dirs": json.dumps(data.dataset_dirs()),
        "ss_reg_dataset_dirs": json.dumps(data.dataset_dirs(reg=True)),
        "ss_tag_frequency": json.dumps(data.tag_frequency()),
        "ss_bucket_info": json.dumps(data.bucket_info()),
        # base model
        "ss_sd_model_name": bundle.model_name,
        "ss_sd_model_hash": bundle.model_hash,
        "ss_new_sd_model_hash": bundle.model_sha256,
        # kazari extra, ignored by other tools
        "ss_attention": t.attention,
    }
    if net_args:
        md["ss_network_args"] = json.dumps(net_args)
    if bundle.vae_name:
        md["ss_vae_name"] = bundle.vae_name
        md["ss_vae_hash"] = bundle.vae_hash
        md["ss_new_vae_hash"] = bundle.vae_sha256
    md.update({
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers",
        "modelspec.title": out.output_name,
        "modelspec.resolution": f"{w}x{h}",
        "modelspec.prediction_type": "epsilon",
        # As sd-scripts writes them: the CLIP layer the prompts are read from (clip_skip), and the
        # version of the implementation named above that loads the file.
        "modelspec.encoder_layer": t.clip_skip,
        "modelspec.implementation_version": _diffusers_version(),
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(md["ss_training_started_at"])),
    })
    return {k: _s(v) for k, v in md.items()}


def _diffusers_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("diffusers")
    except PackageNotFoundError:  # pragma: no cover - diffusers is a dependency
        return "unknown"


def for_save(base: dict[str, str], *, step: int, epoch: int) -> dict[str, str]:
    md = dict(base)
    md["ss_training_finished_at"] = str(time.time())
    md["ss_steps"] = str(step)
    md["ss_epoch"] = str(epoch)
    return md

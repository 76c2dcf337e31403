"""The training run: a readable, linear loop (nanoGPT style) that emits ``trainer.events``.

    run = TrainingRun(cfg, on_event=print, resume_from=None)
    run.run()            # blocking; call it from a worker thread in a UI
    run.request_stop()   # from any thread: save a resumable state + the LoRA, then return
    run.request_save() / run.request_sample() / run.pause() / run.resume()

One optimizer step = ``gradient_accumulation_steps`` batches. The loop never reads a GPU value
on the host per step: losses are copied to pinned memory without blocking and reported when their
copy has landed (``_LossReader``); NaN checks ride on the same reads. Requests from other threads
are plain ``threading.Event`` flags looked at between optimizer steps, so a stop or a save always
happens at a consistent point that resumes exactly.

Under ``accelerate launch`` / torchrun (``WORLD_SIZE`` > 1) each process takes every N-th batch,
LoRA gradients are all-reduced before each step, and only rank 0 writes files and emits events.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tagging.errors import UserError
from trainer import events as ev
from trainer import metadata as md
from trainer.data import DataPipeline, fill_latent_cache, iter_batch_items, load_pixels
from trainer.device import resolve_device
from trainer.latent_cache import LatentCache, vae_fingerprint
from trainer.optim import build_optimizer, build_scheduler, current_lrs, parse_optimizer_args
from trainer.resume import (
    apply_new_hyperparameters,
    compare_settings,
    drop_rolling_state,
    lock_output_dir,
    settings_of,
)
from trainer.state import Counters, capture_rng, load_state, restore_rng, save_state
from trainer.step import NoiseSchedule, StepOptions, TrainStep, set_attention
from trainer.text_cache import TextStateCache, captions_are_fixed

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32, "fp32": torch.float32,
           "no": torch.float32}


class NonFiniteLoss(Exception):
    pass


class _LossReader:
    """Collects per-step losses without blocking the host.

    ``push`` starts a non-blocking device->pinned-host copy and records a CUDA event; ``ready``
    returns the (step, loss) pairs whose copies have finished, checked with ``event.query()``
    (never a wait). ``flush`` waits, for epoch ends and saves, where a sync costs nothing.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.pending: deque[tuple[int, torch.Tensor, Any]] = deque()

    def push(self, step: int, loss: torch.Tensor, lrs: dict[str, float] | None = None) -> None:
        """``lrs``: the learning rates the step used, reported with its loss (by then the
        scheduler has moved on)."""
        loss = loss.detach().float()
        if self.cuda:
            host = torch.empty((), dtype=torch.float32, pin_memory=True)
            host.copy_(loss, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            self.pending.append((step, host, done, lrs))
        else:
            self.pending.append((step, loss, None, lrs))

    def ready(self) -> list[tuple[int, float, dict[str, float] | None]]:
        out = []
        while self.pending and (self.pending[0][2] is None or self.pending[0][2].query()):
            step, value, _, lrs = self.pending.popleft()
            out.append((step, float(value), lrs))
        return out

    def flush(self) -> list[tuple[int, float, dict[str, float] | None]]:
        if self.pending and self.pending[-1][2] is not None:
            self.pending[-1][2].synchronize()
        return self.ready()


def _dist_info() -> tuple[int, int, int]:
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


def _oom_message(cfg) -> str:
    t, d, n = cfg.training, cfg.dataset, cfg.network
    tips = [f"[training] train_batch_size = {t.train_batch_size} (lower it, and raise gradient_accumulation_steps "
            "to keep the effective batch)"]
    if not t.gradient_checkpointing:
        tips.append("[training] gradient_checkpointing = true")
    if t.mixed_precision == "no":
        tips.append('[training] mixed_precision = "bf16" (or "fp16" on older GPUs)')
    tips.append(f"[dataset] resolution = \"{d.resolution}\" / max_bucket_reso = {d.max_bucket_reso} (smaller images)")
    if d.cache_latents == "off":
        tips.append('[dataset] cache_latents = "memory" (frees the VAE from the training step)')
    if d.max_token_length > 75:
        tips.append(f"[dataset] max_token_length = {d.max_token_length} (75 is cheapest)")
    if not n.train_unet_only:
        tips.append("[network] train_unet_only = true")
    tips.append(f"[network] network_dim = {n.network_dim}")
    return ("The GPU ran out of memory (CUDA OOM). Settings that lower memory use, most effective first: "
            + "; ".join(tips) + ". Also close other programs using the GPU.")


def _nan_message(cfg, step: int) -> str:
    t, o = cfg.training, cfg.optimizer
    causes = []
    if t.mixed_precision == "fp16":
        causes.append('fp16 overflow (try mixed_precision = "bf16", or fp32 on GPUs without bf16; a fp16 '
                      "VAE is a classic source: use an fp16-fixed VAE)")
    lr = o.effective_unet_lr
    causes.append(f"a learning rate too high for this optimizer (unet_lr = {lr:g}; LoRA usually uses 1e-4 or less "
                  "with AdamW, 3-10x less with Lion)")
    causes.append(f"network_alpha ({cfg.network.network_alpha:g}) large compared to network_dim "
                  f"({cfg.network.network_dim})")
    if o.max_grad_norm == 0:
        causes.append("gradient clipping is off (max_grad_norm = 0)")
    return (f"The loss became NaN/inf at step {step}, so training stopped; the checkpoints written before "
            "it are intact. Likely causes: " + "; ".join(causes) + ".")


class TrainingRun:
    """One training run of ``cfg`` (a ``TrainConfig``); see the module docstring."""

    def __init__(self, cfg, on_event: Callable[[Any], None] | None = None,
                 resume_from: Path | str | None = None) -> None:
        self.cfg = cfg
        self._on_event = on_event or (lambda e: None)
        self.resume_from = Path(resume_from) if resume_from else None
        self._stop = threading.Event()
        self._save = threading.Event()
        self._sample = threading.Event()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self.parked = threading.Event()  # set while the loop waits in a pause, between two steps
        self.rank, self.world_size, self.local_rank = _dist_info()
        self.last_checkpoint: Path | None = None
        self.result: Any = None
        self.network: Any = None

    # ----- requests (thread-safe) ------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()
        self._unpaused.set()  # a paused run must wake up to stop

    def request_save(self) -> None:
        self._save.set()

    def request_sample(self) -> None:
        self._sample.set()

    def pause(self) -> None:
        self._unpaused.clear()

    def resume(self) -> None:
        self._unpaused.set()

    @property
    def paused(self) -> bool:
        return not self._unpaused.is_set()

    # ----- events -----------------------------------------------------------------------------------
    def emit(self, event: Any) -> None:
        if self.rank != 0:
            return
        log = getattr(self, "_log", None)
        if log is not None and not isinstance(event, (ev.SampleReady, ev.CachingProgress)):
            record = {"event": type(event).__name__, "time": time.time(), **_plain(event)}
            try:
                log.write(json.dumps(record, default=str) + "\n")
            except OSError as exc:  # a full or vanished log disk must not end (or mask the end of) the run
                self._close_log()
                self._on_event(ev.TrainWarning(
                    f"The event log in {self.cfg.logging.logging_dir} cannot be written ({exc.strerror or exc}); "
                    "training goes on without it."))
        self._on_event(event)

    def _open_log(self) -> None:
        """JSON lines of the run's events in [logging] logging_dir (one file per run)."""
        folder = self.cfg.logging.logging_dir
        if folder is None or self.rank != 0:
            return
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{self.cfg.output.output_name}_{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        self._log = open(folder / name, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in run()

    # ----- entry point ------------------------------------------------------------------------------
    def run(self) -> Any:
        """Train; returns the final ``Finished`` or ``Failed`` event (also emitted)."""
        from tagging.threads import configure_torch

        configure_torch()  # deliberate thread counts (tagging/threads.py), also when the TUI runs us
        self._t0 = time.perf_counter()
        self._step = 0
        self._epoch = 0
        try:
            result = self._run()
        except UserError as exc:
            result = ev.Failed(str(exc), "user", self.last_checkpoint, self._step, self._epoch)
        except NonFiniteLoss as exc:
            result = ev.Failed(str(exc), "nan", self.last_checkpoint, self._step, self._epoch)
        except torch.OutOfMemoryError:
            result = ev.Failed(_oom_message(self.cfg), "oom", self.last_checkpoint, self._step, self._epoch)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:  # permissions, a vanished drive...: say which file and why
                result = ev.Failed(
                    f"Cannot access {exc.filename or 'a file'}: {exc.strerror or exc}. The checkpoints written "
                    f"before are intact (last: {self.last_checkpoint or 'none'}).", "error", self.last_checkpoint,
                    self._step, self._epoch)
            else:
                result = ev.Failed(
                    f"The disk is full ({exc.filename or 'output folder'}); the last complete checkpoint is "
                    f"{self.last_checkpoint or 'none'} and it was not overwritten. Free space in "
                    f"{self.cfg.output.output_dir} and resume.", "disk", self.last_checkpoint, self._step,
                    self._epoch)
        except Exception as exc:
            # A bug, not a user mistake: tell the watcher (the TUI shows it), keep the traceback.
            self.result = ev.Failed(
                f"Training stopped on an unexpected error ({type(exc).__name__}: {exc}). The checkpoints "
                f"written before it are intact (last: {self.last_checkpoint or 'none'}).", "error",
                self.last_checkpoint, self._step, self._epoch)
            with contextlib.suppress(Exception):
                self.emit(self.result)
            self._close_log()
            raise
        finally:
            self._teardown_dist()
            if getattr(self, "_out_lock", None) is not None:
                self._out_lock.release()
                self._out_lock = None
        self.result = result
        self.emit(result)
        self._close_log()
        return result

    def _close_log(self) -> None:
        log = getattr(self, "_log", None)
        self._log = None
        if log is not None:
            with contextlib.suppress(OSError):  # flushing onto a full disk
                log.close()

    # ----- setup helpers ------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return resolve_device(self.cfg.training.device,
                              local_rank=self.local_rank if self.world_size > 1 else None)

    def _setup_dist(self, device: torch.device) -> None:
        self._dist = False
        if self.world_size > 1:
            import torch.distributed as dist

            if device.type == "cuda":
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self._dist = True

    def _teardown_dist(self) -> None:
        if getattr(self, "_dist", False):
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._dist = False

    def _all_reduce_grads(self, params: list[torch.nn.Parameter], stop: bool) -> bool:
        """Average the LoRA gradients over the processes; returns True if any process asked to stop.

        LoRA gradients are small: one flat all-reduce is simpler than DDP buckets and as fast. The
        stop flag rides along so that every process stops at the same step (a process leaving alone
        would hang the others in their next all-reduce); reading it is the one per-step host sync of
        multi-process runs.
        """
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flag = torch.ones(1, device=grads[0].device) if stop else torch.zeros(1, device=grads[0].device)
        flat = torch.cat([g.reshape(-1).float() for g in grads] + [flag])
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = (flat[offset : offset + n] / self.world_size).view_as(g).to(g.dtype)
            offset += n
        return bool(flat[-1] > 0)

    def _agree(self, flag: bool) -> bool:
        """True if any process says so (a plain value in a single-process run)."""
        if not self._dist:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self._device_obj)
        dist.all_reduce(t)
        return bool(t[0] > 0)

    def _precision(self, device: torch.device) -> tuple[torch.dtype | None, torch.dtype]:
        """(autocast dtype or None, dtype of the frozen weights)."""
        mp = self.cfg.training.mixed_precision
        if device.type != "cuda" or mp == "no":
            if device.type != "cuda" and mp != "no":
                self.emit(ev.TrainWarning(f'mixed_precision = "{mp}" is ignored on CPU; training in fp32.'))
            return None, torch.float32
        if mp == "bf16" and not torch.cuda.is_bf16_supported():
            raise UserError('[training] mixed_precision = "bf16" but this GPU has no bf16 support.',
                            hint='Use "fp16".')
        dt = _DTYPES[mp]
        return dt, dt

    def _gate(self, cfg: Any) -> None:
        """The one validation every run passes, whoever starts it (`kazari train`, the Train screen).

        Errors stop the run before anything loads (a "user" failure); warnings reach the watcher.
        """
        from trainer.config.checks import check_config
        from trainer.config.errors import ConfigError

        issues = check_config(cfg, path=getattr(cfg, "_source", None))
        if any(i.severity == "error" for i in issues):
            raise ConfigError(issues, path=getattr(cfg, "_source", None))
        if self.rank == 0:
            for issue in issues:
                self.emit(ev.TrainWarning(str(issue)))

    # ----- the run ------------------------------------------------------------------------------------
    def _run(self) -> Any:
        cfg = self.cfg
        t, o, d, out = cfg.training, cfg.optimizer, cfg.dataset, cfg.output
        self._gate(cfg)
        device = self._device()
        self._device_obj = device
        if device.type == "cuda":
            # Bucket shapes repeat all run long: let cuDNN pick its fastest convolution per shape once.
            torch.backends.cudnn.benchmark = True
        self._setup_dist(device)
        autocast_dtype, weight_dtype = self._precision(device)
        resume_state = load_state(self.resume_from) if self.resume_from is not None else None
        seed = t.seed
        if seed is None:  # a random seed, unless resuming a run that drew one
            seed = resume_state.counters.seed if resume_state and resume_state.counters.seed is not None \
                else random.randint(0, 2**31 - 1)
        # Seed everything (Python, NumPy, torch) so two runs of the same config are identical.
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

        self._check_sample_settings()  # a bad preview prompt must fail now, not after the first epoch
        if self.rank == 0:  # one run per output folder, taken before anything is written there
            self._out_lock = lock_output_dir(Path(out.output_dir), self.emit)
        data = DataPipeline.from_config(cfg)
        data.seed = seed

        from trainer.models import load_sd1

        # The VAE stays fp32: fp16 SD VAEs overflow into NaN latents (sd-scripts' --no_half_vae).
        bundle = load_sd1(cfg.model.pretrained_model, vae=cfg.model.vae, tokenizer=cfg.model.tokenizer,
                          dtype=weight_dtype, device=device, vae_dtype=torch.float32,
                          use_ema=cfg.model.use_ema)
        unet, text_encoder, vae = bundle.unet, bundle.text_encoder, bundle.vae
        set_attention(unet, t.attention)

        network = self._build_network(bundle)
        self.network = network  # for callers that want the live LoRA (tests, the TUI's previews)
        train_te = self._train_te
        if t.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            unet.train()  # diffusers only checkpoints in train mode; SD's U-Net has no dropout
            if train_te:
                enable = getattr(text_encoder, "activation_checkpointing_enable", None)  # transformers >= 5.x
                (enable or text_encoder.gradient_checkpointing_enable)()
                text_encoder.train()

        groups = network.param_groups(unet_lr=o.effective_unet_lr, text_encoder_lr=o.effective_text_encoder_lr)
        opt_args = parse_optimizer_args(o.optimizer_args)
        optimizer = build_optimizer(o.optimizer_type, groups, opt_args)
        params = [p for g in optimizer.param_groups for p in g["params"]]

        batches_per_epoch = math.ceil(data.batches_per_epoch / self.world_size)
        accum = t.gradient_accumulation_steps
        steps_per_epoch = math.ceil(batches_per_epoch / accum)
        total_steps = steps_per_epoch * t.max_train_epochs
        scheduler = build_scheduler(o.lr_scheduler, optimizer, total_steps=total_steps,
                                    warmup_steps=o.lr_warmup_steps, num_cycles=o.lr_scheduler_num_cycles,
                                    power=o.lr_scheduler_power)
        scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)

        # The run's own random streams: noise/timesteps on the device, captions/flips in Python.
        noise_gen = torch.Generator(device=device).manual_seed(seed)
        caption_rng = random.Random(seed)
        gens = {"noise": noise_gen, "captions": caption_rng}

        counters = Counters(dataset_keys=[im.key for im in data.images], seed=seed)
        if resume_state is not None:
            counters = self._load_resume(resume_state, network, optimizer, scheduler, scaler, gens, data)
            counters.seed = seed
        self._step, self._epoch = counters.step, counters.epoch

        out_dir = Path(out.output_dir)
        moved_aside = None
        if self.rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            if self.resume_from is None:
                moved_aside = keep_previous_outputs(out_dir, out.output_name)
            self._open_log()
        self.emit(ev.RunStarted(
            total_steps=total_steps, steps_per_epoch=steps_per_epoch, total_epochs=t.max_train_epochs,
            batches_per_epoch=batches_per_epoch, num_train_images=data.num_train_images,
            num_reg_images=data.num_reg_images, images_per_epoch=data.images_per_epoch,
            batch_size=t.train_batch_size, gradient_accumulation_steps=accum, start_step=counters.step,
            start_epoch=counters.epoch, device=str(device), output_dir=out_dir, world_size=self.world_size))
        for message in data.warnings:  # damaged images left out, captions that are not files
            self.emit(ev.TrainWarning(message))
        if moved_aside is not None:
            self.emit(ev.TrainWarning(
                f"{out_dir} already held checkpoints named {out.output_name!r} from an earlier run; they were "
                f"moved to {moved_aside} instead of being overwritten."))

        # Latents: encode once (or find them in the disk cache), with progress events.
        cache = LatentCache(d.cache_latents, (data.root or out_dir) / ".kazari" / "latents")
        vae_id = vae_fingerprint(vae)
        cache_keys = None
        if cache.enabled:
            def progress(done: int, total: int, reused: int) -> None:
                self.emit(ev.CachingProgress(done, total, reused))

            cache_keys = fill_latent_cache(data, cache, vae, vae_id, on_progress=progress,
                                           should_stop=self._stop.is_set)
            # Latents of a character dataset are small (64 KiB per 512² image): keep them on the
            # device so a step needs no host->device copy (a blocking copy would sync every step).
            if self._stop.is_set():  # stopped while caching: nothing trained, nothing to save
                return ev.Finished(step=counters.step, epoch=counters.epoch, final_path=None,
                                   elapsed_s=time.perf_counter() - self._t0, stopped_early=True)
            dev_latents = {k: cache.get(k).to(device) for ks in cache_keys for k in ks}

        base_md = md.training_metadata(
            cfg, data, bundle, optimizer_text=md.optimizer_description(optimizer, opt_args),
            num_batches_per_epoch=batches_per_epoch, max_train_steps=total_steps, seed=seed,
            world_size=self.world_size)
        schedule = NoiseSchedule.from_scheduler(bundle.noise_scheduler, device)
        # The step's device work (LoRA in the autocast dtype, channels_last, fused optimizer, compile).
        train_step = TrainStep(unet, network, optimizer, scheduler, scaler, schedule,
                               options=StepOptions(compile=t.compile), autocast_dtype=autocast_dtype,
                               max_grad_norm=o.max_grad_norm, generator=noise_gen, noise_offset=t.noise_offset,
                               min_snr_gamma=t.min_snr_gamma or None, accumulation=accum)

        def encode_text(captions: list[str]) -> torch.Tensor:
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None), torch.set_grad_enabled(train_te):
                return self._encode_text(bundle, captions).to(weight_dtype)

        # A frozen text encoder and fixed captions: each caption is encoded once per run.
        text_states = TextStateCache(encode_text, enabled=not train_te and captions_are_fixed(data.captions))

        from trainer.validation import RunValidation  # fixed-noise validation loss at each save

        self._validation = RunValidation.start(self, data, bundle, schedule, device, autocast_dtype, weight_dtype)
        losses = _LossReader(device)
        recent: deque[float] = deque(maxlen=max(10, batches_per_epoch))
        epoch_losses: list[float] = []
        images_per_step = t.train_batch_size * accum * self.world_size
        t_start = time.perf_counter()
        steps_at_start = counters.step

        def report(ready: list[tuple[int, float, dict[str, float] | None]], epoch: int) -> None:
            for step, value, lrs in ready:
                if not math.isfinite(value):
                    raise NonFiniteLoss(_nan_message(cfg, step))
                recent.append(value)
                epoch_losses.append(value)
                now = time.perf_counter()
                done = step - steps_at_start
                it_s = done / max(now - t_start, 1e-9)
                mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
                self.emit(ev.StepEvent(
                    step=step, total_steps=total_steps, epoch=epoch, loss=value,
                    smoothed_loss=sum(recent) / len(recent), lrs=lrs or current_lrs(optimizer),
                    images_per_s=it_s * images_per_step, it_per_s=it_s, gpu_mem_gb=mem,
                    eta_s=(total_steps - step) / it_s if it_s > 0 else None))

        ctx = _Ctx(cfg=cfg, device=device, out_dir=out_dir, network=network, optimizer=optimizer,
                   scheduler=scheduler, scaler=scaler, gens=gens, base_md=base_md, bundle=bundle)
        sample_every = cfg.sample.sample_every_n_epochs
        save_every = out.save_every_n_epochs
        start_epoch = counters.epoch + 1
        stopped = False

        for epoch in range(start_epoch, t.max_train_epochs + 1):
            self._epoch = epoch - 1
            data.reload_captions()  # edits made in the TUI since the last epoch apply now
            all_batches = data.epoch_batches(epoch)
            # Every process takes every world_size-th batch, wrapping around so that all of them do
            # the same number of steps (as torch's DistributedSampler pads).
            n_local = math.ceil(len(all_batches) / self.world_size)
            batches = [all_batches[(self.rank + k * self.world_size) % len(all_batches)] for k in range(n_local)]
            first = counters.batch_in_epoch if epoch == start_epoch else 0
            counters.batch_in_epoch = first
            counters.data_order = all_batches
            epoch_losses.clear()
            micro = 0
            for bi in range(first, len(batches)):
                batch = batches[bi]
                items = list(iter_batch_items(batch, caption_rng, data.flip_aug))
                captions = [data.caption(i, caption_rng, epoch) for i, _ in items]
                if cache_keys is not None:
                    latents = torch.stack([dev_latents[cache_keys[i][1 if flip else 0]] for i, flip in items])
                else:
                    pixels = torch.stack([load_pixels(data.images[i].path, data.images[i].bucket, flip,
                                                      data.images[i].resized) for i, flip in items])
                    with torch.no_grad():
                        dist = vae.encode(_to_device(pixels, device)).latent_dist
                        noise = torch.randn(dist.mean.shape, generator=noise_gen, device=device)
                        latents = (dist.mean + dist.std * noise) * float(vae.config.scaling_factor)
                latents = latents.to(weight_dtype)
                weights = _to_device(torch.tensor(data.sample_weights(batch)), device)

                loss = train_step.forward_backward(latents, text_states(captions), weights)
                micro += 1
                counters.images_seen += len(batch) * self.world_size
                last_of_epoch = bi == len(batches) - 1
                if micro % accum != 0 and not last_of_epoch:
                    continue

                # ---- optimizer step ----
                agreed_stop = self._all_reduce_grads(params, self._stop.is_set()) if self._dist else False
                step_lrs = train_step.optimizer_step()
                counters.step += 1
                counters.batch_in_epoch = bi + 1
                self._step = counters.step
                micro = 0
                losses.push(counters.step, loss, step_lrs)
                report(losses.ready(), epoch)

                # ---- requests from outside, between steps ----
                if not self._unpaused.is_set():
                    report(losses.flush(), epoch)
                    self.parked.set()  # observers (tests, the TUI) can wait for the loop to really stop
                    self._unpaused.wait()
                    self.parked.clear()
                if self._save.is_set():
                    self._save.clear()
                    report(losses.flush(), epoch)
                    self._save_lora(ctx, f"{out.output_name}-step{counters.step:08d}", counters, "manual")
                if self._sample.is_set():
                    self._sample.clear()
                    self._run_samples(ctx, counters, epoch)
                # Multi-process: only the flag agreed in the all-reduce counts, so all stop together.
                if (agreed_stop if self._dist else self._stop.is_set()) and not last_of_epoch:
                    stopped = True
                    break

            if stopped:
                report(losses.flush(), epoch)
                break
            # ---- epoch end ----
            report(losses.flush(), epoch)
            counters.epoch = epoch
            counters.batch_in_epoch = 0
            counters.data_order = []
            self._epoch = epoch
            mean = sum(epoch_losses) / len(epoch_losses) if epoch_losses else float("nan")
            self.emit(ev.EpochEnd(epoch, t.max_train_epochs, counters.step, mean))
            is_last = epoch == t.max_train_epochs
            if not is_last and save_every and epoch % save_every == 0:
                self._save_lora(ctx, f"{out.output_name}-{epoch:06d}", counters, "epoch")
                # The newest state is always kept (a kill or a TERM resumes from it); save_state keeps
                # every epoch's too.
                self._save_state(ctx, out_dir / f"{out.output_name}-{epoch:06d}-state" if out.save_state
                                 else out_dir / f"{out.output_name}-state", counters)
            if (sample_every and epoch % sample_every == 0) or (is_last and sample_every):
                self._run_samples(ctx, counters, epoch)
            if self._agree(self._stop.is_set()) and not is_last:
                stopped = True
                break

        state_dir = None
        if stopped:
            # A stop is resumable: the state goes to <name>-state, the weights to a step-named file.
            state_dir = self._save_state(ctx, out_dir / f"{out.output_name}-state", counters)
            final = self._save_lora(ctx, f"{out.output_name}-step{counters.step:08d}", counters, "stop")
        else:
            final = self._save_lora(ctx, out.output_name, counters, "final")
            if out.save_state:
                state_dir = self._save_state(ctx, out_dir / f"{out.output_name}-state", counters)
            elif self.rank == 0:
                drop_rolling_state(out_dir, out.output_name)  # finished: nothing left to resume
        return ev.Finished(step=counters.step, epoch=counters.epoch, final_path=final,
                           elapsed_s=time.perf_counter() - self._t0, stopped_early=stopped, state_dir=state_dir)

    # ----- network / text ----------------------------------------------------------------------------
    def _build_network(self, bundle):
        from trainer.lora import LoRANetwork

        n, o = self.cfg.network, self.cfg.optimizer
        self._train_te = not n.train_unet_only and o.text_encoder_lr != 0
        network = LoRANetwork(
            bundle.unet, bundle.text_encoder, dim=n.network_dim, alpha=n.network_alpha, conv_dim=n.conv_dim,
            conv_alpha=n.conv_alpha, train_unet=not n.train_text_encoder_only,
            train_text_encoder=self._train_te)
        if n.network_weights:
            network.load_weights(n.network_weights)
        network.to(bundle.device, torch.float32)  # the trainable LoRA stays fp32 under autocast
        return network

    def _encode_text(self, bundle, captions: list[str]) -> torch.Tensor:
        from trainer.text_encoding import encode_tokens, tokenize

        ids = tokenize(bundle.tokenizer, captions, self.cfg.dataset.max_token_length)
        ids = _to_device(ids, bundle.text_encoder.device)  # non-blocking, so no per-step sync
        return encode_tokens(bundle.text_encoder, ids, clip_skip=self.cfg.training.clip_skip)

    # ----- saving -------------------------------------------------------------------------------------
    def _save_lora(self, ctx: _Ctx, stem: str, counters: Counters, kind: str) -> Path | None:
        if self.rank != 0:
            return None
        out = self.cfg.output
        path = ctx.out_dir / f"{stem}.{out.save_model_as}"
        meta = md.for_save(ctx.base_md, step=counters.step, epoch=counters.epoch)
        validation = getattr(self, "_validation", None)  # fixed-noise validation loss, kept in the file
        meta = validation.annotate(meta) if validation is not None else meta
        # LoRANetwork.save writes a temp file and renames it: a full disk leaves the old file intact.
        ctx.network.save(path, metadata=meta, dtype=_DTYPES[out.save_precision], format=out.save_model_as)
        self.last_checkpoint = path
        self.emit(ev.CheckpointSaved(path, counters.epoch, counters.step, kind))
        if validation is not None:
            validation.announce(path, counters.epoch, counters.step)
        return path

    def _save_state(self, ctx: _Ctx, folder: Path, counters: Counters) -> Path | None:
        if self.rank != 0:
            return None
        save_state(folder, lora_state=ctx.network.state_dict(), optimizer=ctx.optimizer,
                   scheduler=ctx.scheduler, scaler=ctx.scaler, counters=counters, rng=capture_rng(ctx.gens),
                   extra={"output_name": self.cfg.output.output_name, "settings": settings_of(self.cfg)})
        self.emit(ev.CheckpointSaved(folder, counters.epoch, counters.step, "state"))
        return folder

    def _load_resume(self, st, network, optimizer, scheduler, scaler, gens, data: DataPipeline) -> Counters:
        diff = compare_settings(st.info.get("settings"), self.cfg, self.resume_from)
        if diff.refuse:
            raise UserError(diff.refuse, path=self.resume_from)
        for message in diff.warnings:
            self.emit(ev.TrainWarning(message))
        new_lrs = [g["lr"] for g in optimizer.param_groups]
        try:
            network.load_weights(st.lora_state, source=f"The state in {self.resume_from} (lora.safetensors)")
        except UserError as exc:  # another network shape: the fix is about --resume, not network_weights
            raise UserError(
                f"The state in {self.resume_from} was saved for another network shape than this config's "
                f"[network] (network_dim {self.cfg.network.network_dim}, conv_dim {self.cfg.network.conv_dim}).",
                path=self.resume_from,
                hint="Resume with the [network] settings the state was saved with, or start a fresh run without "
                "--resume.") from exc
        try:
            optimizer.load_state_dict(st.optimizer)
        except ValueError as exc:
            raise UserError(
                f"The state in {self.resume_from} does not match this config's network/optimizer ({exc}).",
                path=self.resume_from,
                hint="Resume with the same [network] and [optimizer] settings the state was saved with.") from exc
        if st.scheduler is not None:
            scheduler.load_state_dict(st.scheduler)
        apply_new_hyperparameters(optimizer, scheduler, new_lrs, parse_optimizer_args(self.cfg.optimizer.optimizer_args),
                                  diff.changed)
        if st.scaler is not None and scaler.is_enabled():
            scaler.load_state_dict(st.scaler)
        restore_rng(st.rng, gens)
        keys = [im.key for im in data.images]
        if st.counters.dataset_keys and st.counters.dataset_keys != keys:
            self.emit(ev.TrainWarning(
                "The dataset changed since this state was saved (images added, removed or moved); the run "
                "resumes, but not exactly where it stopped."))
            st.counters.batch_in_epoch = 0
        st.counters.dataset_keys = keys
        return st.counters

    # ----- samples ------------------------------------------------------------------------------------
    def _check_sample_settings(self) -> None:
        """Parse the preview prompts and sampler name up front (UserError on a mistake)."""
        s = self.cfg.sample
        if not s.sample_prompts:
            return
        from trainer.prompts import load_prompts
        from trainer.sampling import sampler_label

        sampler_label(s.sample_sampler)
        load_prompts(s.sample_prompts)

    def _run_samples(self, ctx: _Ctx, counters: Counters, epoch: int) -> None:
        if self.rank != 0:
            return
        if not self.cfg.sample.sample_prompts:
            return
        from trainer.prompts import load_prompts
        from trainer.sampling import Cancelled, Sampler, save_png

        try:
            # Re-read at every preview (as sd-scripts does), so a prompt file edited mid-run applies;
            # a mistake made in it meanwhile costs the preview, not the run.
            prompts = load_prompts(self.cfg.sample.sample_prompts)
        except UserError as exc:
            self.emit(ev.TrainWarning(f"Preview skipped at epoch {epoch}: {exc}"))
            return
        sampler = Sampler(ctx.bundle, sampler=self.cfg.sample.sample_sampler,
                          clip_skip=self.cfg.training.clip_skip,
                          max_token_length=self.cfg.dataset.max_token_length, network=ctx.network)
        sampler.weight = 1.0
        sample_dir = ctx.out_dir / "sample"
        stamp = time.strftime("%Y%m%d%H%M%S")
        # Sampling must not consume the training RNG streams (exact resume depends on them).
        with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
            try:
                for i, (prompt, image) in enumerate(sampler.sample_prompts(prompts, cancel=self._stop.is_set)):
                    name = f"{self.cfg.output.output_name}_e{epoch:06d}_{i:02d}_{stamp}.png"
                    path = save_png(image, sample_dir / name)
                    self.emit(ev.SampleReady(image=image, path=path, prompt=prompt, epoch=epoch,
                                             step=counters.step, index=i))
            except Cancelled:  # a stop request interrupts a long preview
                return


def keep_previous_outputs(out_dir: Path, name: str) -> Path | None:
    """Move an earlier run's ``name`` checkpoints and state folders out of the way (never overwrite).

    A fresh run writes ``{name}-{epoch:06d}``, ``{name}-step{step:08d}``, ``{name}`` and
    ``{name}[-{epoch:06d}]-state``; the earlier run's files of those names (often the very epoch the
    user picked) go to ``out_dir/.kazari/previous/<time>/``. Returns that folder, or None if nothing
    had to move.
    """
    pattern = re.compile(rf"^{re.escape(name)}(-\d{{6}}|-step\d{{8}})?(\.(safetensors|ckpt|pt)|-state)$"
                         rf"|^{re.escape(name)}-\d{{6}}-state$")
    found = [p for p in out_dir.iterdir() if pattern.match(p.name)]
    if not found:
        return None
    dest = out_dir / ".kazari" / "previous" / time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{dest.name.split('_')[0]}_{n}")
    dest.mkdir(parents=True)
    for p in found:
        os.replace(p, dest / p.name)
    return dest


def _plain(event: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(event).items() if k != "image"}


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device without a sync: a plain copy from pageable memory waits for the GPU queue."""
    if device.type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


class _Ctx:
    """What the save/sample helpers need, bundled to keep their signatures short."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


__all__ = ["TrainingRun", "NonFiniteLoss", "keep_previous_outputs"]

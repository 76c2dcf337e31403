"""The training config schema: one pydantic model per TOML section.

Field names follow sd-scripts where an option exists there, so users (and the interop code) can
map between the two. Every field carries a one-line description plus ``unit`` metadata; the TUI
renders its form from :func:`field_specs`, and ``docs/config.md`` is generated from the same data.

Types are strict when a file is read (``"64"`` is not an integer: sd-scripts would choke on it
later); paths are the exception, a TOML string is the only way to write one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, field_validator

from trainer.config.sd_options import SD_TO_KAZARI, sd_label

OPTIMIZERS = ("AdamW", "AdamW8bit", "Lion", "Lion8bit", "Prodigy", "SGD", "SGDNesterov")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
WARMUP_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant_with_warmup")
SAMPLERS = (
    "ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver", "dpmsolver++",
    "dpmsingle", "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a",
)


def _canonical_choice(choices: tuple[str, ...]):
    """Accept any letter case for a choice (sd-scripts compares optimizer names case-blind)."""
    table = {c.lower(): c for c in choices}

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return table.get(value.strip().lower(), value)
        return value

    return BeforeValidator(convert)


def _resolution_text(value: Any) -> Any:
    """512 / "512" / "512,768" / [512, 768] -> "W,H" (the sd-scripts --resolution string)."""
    if isinstance(value, bool):
        return value  # let the type check reject it
    if isinstance(value, int):
        return f"{value},{value}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return f"{value[0]},{value[1]}"
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace("x", ",").split(",")]
        if len(parts) == 1 and parts[0].isdigit():
            return f"{parts[0]},{parts[0]}"
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            return f"{int(parts[0])},{int(parts[1])}"
        raise ValueError('write the resolution as "W,H" (e.g. "768,768") or one number for a square')
    return value


PathField = Annotated[Path, Field(strict=False)]
Resolution = Annotated[str, BeforeValidator(_resolution_text)]


def _f(default: Any = ..., description: str = "", *, unit: str = "", advanced: bool = False,
       **limits: Any) -> Any:
    """A field with its help text and the metadata the TUI form needs."""
    extra: dict[str, Any] = {"unit": unit, "advanced": advanced}
    kwargs: dict[str, Any] = {"description": description, "json_schema_extra": extra, **limits}
    if isinstance(default, (list, dict)):
        kwargs["default_factory"] = (lambda d=default: type(d)(d))
    else:
        kwargs["default"] = default
    return Field(**kwargs)


class _Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    """[model] — the base checkpoint."""

    pretrained_model: PathField | None = _f(
        None, "Base SD 1.x model: a single .safetensors/.ckpt file or a diffusers folder.", unit="path")
    vae: PathField | None = _f(
        None, "Replacement VAE (file or diffusers folder); unset = the model's own VAE.", unit="path")
    tokenizer: PathField | None = _f(
        None, "Local CLIP tokenizer folder for offline use; unset = the one found with the model.",
        unit="path", advanced=True)
    use_ema: bool = _f(
        False, "Train on the checkpoint's EMA U-Net weights when it has them (model_ema.*); off = the "
        "regular weights, as sd-scripts.", advanced=True)


class DatasetSection(_Section):
    """[dataset] — images, captions, buckets and caching."""

    train_data_dir: PathField | None = _f(
        None, "Parent folder of the N_name training folders (N = repeats, name = trigger).", unit="path")
    reg_data_dir: PathField | None = _f(
        None, "Parent folder of N_name regularization folders; unset = no regularization.", unit="path")
    resolution: Resolution = _f(
        "768,768", "Training resolution W,H; each side a multiple of 64.", unit="pixels \"W,H\"")
    caption_extension: str = _f(".txt", "Extension of the caption file next to each image.", unit="suffix")
    shuffle_caption: bool = _f(True, "Shuffle the comma-separated tags of each caption every step.")
    keep_tokens: int = _f(
        1, "Leading tags kept in place when shuffling/dropping (1 keeps the trigger word first).",
        unit="tags", ge=0, le=255)
    caption_dropout_rate: float = _f(
        0.0, "Probability of training an image with an empty caption.", unit="probability", ge=0, le=1)
    caption_tag_dropout_rate: float = _f(
        0.0, "Probability of dropping each (non-kept) tag.", unit="probability", ge=0, le=1)
    caption_dropout_every_n_epochs: int = _f(
        0, "Drop all captions every N epochs; 0 = never.", unit="epochs", ge=0, advanced=True)
    flip_aug: bool = _f(False, "Random horizontal flips (leave off for asymmetric characters).")
    enable_bucket: bool = _f(True, "Aspect-ratio bucketing instead of square center crops.")
    min_bucket_reso: int = _f(256, "Smallest bucket side.", unit="pixels", ge=64, le=4096)
    max_bucket_reso: int = _f(1024, "Largest bucket side.", unit="pixels", ge=64, le=8192)
    bucket_reso_steps: int = _f(64, "Bucket side step.", unit="pixels (multiple of 8)", ge=8, le=512,
                                advanced=True)
    bucket_no_upscale: bool = _f(
        False, "Never upscale: buckets follow each image's own size (min/max reso ignored).")
    cache_latents: Literal["memory", "disk", "off"] = _f(
        "memory", "Encode images with the VAE once: keep latents in RAM, on disk (.npz), or off.",
        unit="memory | disk | off")
    # Accepted so sd-scripts configs import and export unchanged; kazari does not read them.
    max_data_loader_n_workers: int = _f(
        8, "Ignored (kept for sd-scripts compatibility): kazari decodes images in the training "
        "process; cache latents to take decoding off the training step.", unit="processes",
        ge=0, le=64, advanced=True)
    persistent_data_loader_workers: bool = _f(
        False, "Ignored (kept for sd-scripts compatibility): kazari has no loader worker processes.",
        advanced=True)
    prior_loss_weight: float = _f(
        1.0, "Loss weight of regularization images.", unit="weight", ge=0, le=10)
    max_token_length: Literal[75, 150, 225] = _f(
        225, "Caption length the text encoder sees (75-token chunks).", unit="tokens: 75 | 150 | 225")

    @field_validator("caption_extension")
    @classmethod
    def _dot(cls, value: str) -> str:
        if not value.startswith("."):
            raise ValueError('the caption extension must start with a dot, e.g. ".txt"')
        return value

    @property
    def resolution_wh(self) -> tuple[int, int]:
        """The resolution as ``(width, height)`` integers."""
        w, h = self.resolution.split(",")
        return int(w), int(h)


class NetworkSection(_Section):
    """[network] — the LoRA itself."""

    network_dim: int = _f(64, "LoRA rank of the linear (attention/MLP) layers.", unit="rank", ge=1, le=1024)
    network_alpha: float = _f(
        32.0, "LoRA alpha; the update is scaled by alpha/dim.", unit="scale numerator", gt=0, le=1024)
    conv_dim: int | None = _f(
        None, "Rank of the 3x3 conv layers (LoCon/C3Lier); unset = linear layers only.", unit="rank",
        ge=1, le=1024, advanced=True)
    conv_alpha: float | None = _f(
        None, "Alpha of the conv layers; unset = conv_dim.", unit="scale numerator", gt=0, le=1024,
        advanced=True)
    network_weights: PathField | None = _f(
        None, "Existing LoRA file to continue training from.", unit="path", advanced=True)
    train_unet_only: bool = _f(False, "Train only the U-Net LoRA (less VRAM, weaker prompt binding).")
    train_text_encoder_only: bool = _f(False, "Train only the text-encoder LoRA.", advanced=True)


OptimizerArg = str | int | float | bool | list[str | int | float | bool]


class OptimizerSection(_Section):
    """[optimizer] — optimizer and learning-rate schedule."""

    # Why the valid-type ignores: a Literal of a tuple constant is read by pydantic, not by mypy.

    optimizer_type: Annotated[Literal[OPTIMIZERS], _canonical_choice(OPTIMIZERS)] = _f(  # type: ignore[valid-type]
        "Lion", "Optimizer (8bit variants need bitsandbytes, Prodigy needs prodigyopt).",
        unit=" | ".join(OPTIMIZERS))
    optimizer_args: dict[str, OptimizerArg] = _f(
        {}, "Extra optimizer keyword arguments, e.g. { weight_decay = 0.01 }.", unit="table",
        advanced=True)
    learning_rate: float = _f(5e-5, "Base learning rate (used where unet_lr/text_encoder_lr are unset).",
                              unit="lr", gt=0, le=10)
    unet_lr: float | None = _f(5e-5, "U-Net learning rate; unset = learning_rate.", unit="lr", ge=0, le=10)
    text_encoder_lr: float | None = _f(
        6e-6, "Text-encoder learning rate; 0 freezes it; unset = learning_rate.", unit="lr", ge=0, le=10)
    lr_scheduler: Annotated[Literal[SCHEDULERS], _canonical_choice(SCHEDULERS)] = _f(  # type: ignore[valid-type]
        "cosine_with_restarts", "Learning-rate schedule.", unit=" | ".join(SCHEDULERS))
    lr_warmup_steps: int | float = _f(
        50, "Warmup length in optimizer steps (a number below 1 = fraction of all steps).", unit="steps",
        ge=0)
    lr_scheduler_num_cycles: int = _f(
        1, "Restarts of cosine_with_restarts.", unit="cycles", ge=1, le=1000)
    lr_scheduler_power: float = _f(1.0, "Exponent of the polynomial schedule.", unit="power", gt=0,
                                   le=100, advanced=True)
    max_grad_norm: float = _f(1.0, "Gradient clipping norm; 0 = no clipping.", unit="norm", ge=0,
                              advanced=True)

    @field_validator("lr_warmup_steps")
    @classmethod
    def _warmup(cls, value: int | float) -> int | float:
        if isinstance(value, float):
            if value.is_integer():
                return int(value)
            if value >= 1:
                raise ValueError("use a whole number of steps, or a fraction below 1 of all steps")
        return value

    # sd-scripts: an unset (None) per-module lr falls back to learning_rate; 0 is a real value
    # (it freezes that module). Every reader of the two lrs goes through these.
    @property
    def effective_unet_lr(self) -> float:
        return self.learning_rate if self.unet_lr is None else self.unet_lr

    @property
    def effective_text_encoder_lr(self) -> float:
        return self.learning_rate if self.text_encoder_lr is None else self.text_encoder_lr


class TrainingSection(_Section):
    """[training] — length, precision, memory and loss options."""

    max_train_epochs: int = _f(10, "Number of epochs.", unit="epochs", ge=1, le=100000)
    train_batch_size: int = _f(2, "Images per batch (a batch never mixes buckets).", unit="images",
                               ge=1, le=1024)
    gradient_accumulation_steps: int = _f(
        1, "Batches accumulated per optimizer step.", unit="batches", ge=1, le=1024)
    mixed_precision: Literal["no", "fp16", "bf16"] = _f(
        "fp16", "Autocast precision (bf16 needs an Ampere+ GPU; CPU runs use fp32).", unit="no | fp16 | bf16")
    seed: int | None = _f(1337, "Random seed; unset = random each run.", unit="integer", ge=0, le=2**32 - 1)
    clip_skip: int = _f(2, "Use the text encoder's N-th layer from the end (2 for NAI-style anime models).",
                        unit="layers", ge=1, le=12)
    attention: Literal["sdpa", "xformers", "math"] = _f(
        "sdpa", "Attention kernel: PyTorch SDPA, xformers (if installed), or plain math.",
        unit="sdpa | xformers | math")
    gradient_checkpointing: bool = _f(False, "Recompute activations to save VRAM (about 20% slower).")
    noise_offset: float = _f(0.0, "Noise offset for darker/brighter images; 0 = off (0.05-0.1 typical).",
                             unit="offset", ge=0, le=1)
    min_snr_gamma: float = _f(0.0, "Min-SNR loss weighting gamma; 0 = off (5 is the paper's value).",
                              unit="gamma", ge=0, le=100)
    device: Literal["auto", "cuda", "cpu"] = _f(
        "auto", "Where to train: auto = CUDA when available, else CPU.", unit="auto | cuda | cpu")
    compile: bool = _f(False, "torch.compile the U-Net (one graph, no breaks): slower first steps, "
                       "less host overhead per step after.")


class OutputSection(_Section):
    """[output] — where and how checkpoints are saved."""

    output_dir: PathField = _f(Path("output"), "Folder for the LoRA files.", unit="path")
    output_name: str = _f("lora", "File name stem: NAME.safetensors, NAME-000001.safetensors...",
                          unit="name", min_length=1)
    save_model_as: Literal["safetensors", "ckpt", "pt"] = _f(
        "safetensors", "LoRA file format (safetensors is safe to share).", unit="safetensors | ckpt | pt")
    save_precision: Literal["float", "fp16", "bf16"] = _f(
        "fp16", "Precision of the saved weights.", unit="float | fp16 | bf16")
    save_every_n_epochs: int = _f(1, "Save a checkpoint every N epochs; 0 = only the final one.",
                                  unit="epochs", ge=0)
    save_state: bool = _f(
        False, "Keep a resumable state folder for every epoch save (NAME-000001-state...) and the last one "
        "at the end. When false, only the newest state (NAME-state) is kept while the run is unfinished, so a "
        "kill, Ctrl-C or SIGTERM can still be resumed; it is removed when the run finishes.")

    @field_validator("output_name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError("the output name is a file name stem, without folders (set output_dir)")
        return value


class SampleSection(_Section):
    """[sample] — preview images during training."""

    sample_prompts: list[str] | PathField = _f(
        [], "Prompt lines in sd-scripts syntax (--w --h --d --s --l --n), or a prompt file path.",
        unit="list of lines | path")
    sample_every_n_epochs: int = _f(1, "Render the sample prompts every N epochs; 0 = never.",
                                    unit="epochs", ge=0)
    # mypy cannot read a Literal of a tuple constant; pydantic can
    sample_sampler: Literal[SAMPLERS] = _f(  # type: ignore[valid-type]
        "euler_a", "Sampler for the previews.", unit=" | ".join(SAMPLERS), advanced=True)


class LoggingSection(_Section):
    """[logging] — training logs."""

    logging_dir: PathField | None = _f(Path("logs"), "Folder for the training logs; unset = no logs.",
                                       unit="path", advanced=True)


class JudgeSection(_Section):
    """[judge] — how `kazari judge` scores the epoch × weight grid (see docs/judge.md)."""

    prompts: list[str] | PathField = _f(
        [], "Evaluation prompt lines ({trigger} is replaced); empty = trigger alone, then + an outfit, a place "
        "and a pose the captions never show.", unit="list of lines | path", advanced=True)
    seed_count: int = _f(2, "Seeds per evaluation prompt (more = steadier scores, slower).", unit="seeds",
                         ge=1, le=16, advanced=True)
    tagger: str = _f("wd-swinv2-v3", "Tagger used when the dataset has no last-used one (name or folder).",
                     unit="model name | path", advanced=True)
    general_threshold: float = _f(0.35, "Tagger score above which a tag counts as found.", unit="score",
                                  gt=0, lt=1, advanced=True)
    leak_share: float = _f(0.5, "Training-caption tags at least this frequent count as leakage when drawn "
                           "unprompted.", unit="share of captions", gt=0, le=1, advanced=True)
    beta: float = _f(2.0, "F-beta weight: fidelity (features, identity) counts beta times as much as adherence.",
                     unit="beta", gt=0, le=10, advanced=True)
    leak_penalty: float = _f(0.5, "Score multiplier loss per unit of leakage (score x (1 - penalty x leakage)).",
                             unit="factor", ge=0, le=1, advanced=True)
    identity: bool = _f(False, "Also score identity with CCIP (downloads deepghs/ccip_onnx once).",
                        advanced=True)
    ccip_model: str = _f("ccip-caformer-24-randaug-pruned", "CCIP variant of deepghs/ccip_onnx, or a local "
                         "folder with its three files.", unit="variant | path", advanced=True)
    validation_images: int = _f(4, "Training images in the fixed-noise validation loss at each save; 0 = off.",
                                unit="images", ge=0, le=64, advanced=True)
    validation_timesteps: int = _f(4, "Fixed timesteps per validation image (spread over the schedule).",
                                   unit="timesteps", ge=1, le=32, advanced=True)


SECTIONS: dict[str, type[_Section]] = {
    "model": ModelSection,
    "dataset": DatasetSection,
    "network": NetworkSection,
    "optimizer": OptimizerSection,
    "training": TrainingSection,
    "output": OutputSection,
    "sample": SampleSection,
    "logging": LoggingSection,
    "judge": JudgeSection,
}


class TrainConfig(BaseModel):
    """A whole training config. Build it with :func:`trainer.config.load_config` or :func:`preset`."""

    model_config = ConfigDict(strict=True, extra="forbid", validate_assignment=True)

    model: ModelSection = Field(default_factory=ModelSection)
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    network: NetworkSection = Field(default_factory=NetworkSection)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    output: OutputSection = Field(default_factory=OutputSection)
    sample: SampleSection = Field(default_factory=SampleSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    judge: JudgeSection = Field(default_factory=JudgeSection)

    _source: Path | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        # Two configs are equal when their values are; where they were read from does not matter.
        if not isinstance(other, TrainConfig):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in SECTIONS)

    __hash__ = None  # type: ignore[assignment]  # unhashable, as __eq__ is by value (typeshed types it as a method)

    @property
    def source_path(self) -> Path | None:
        """The TOML file this config was read from (None when built in memory)."""
        return self._source

    def get(self, key: str) -> Any:
        """Value of a dotted key, e.g. ``cfg.get("optimizer.learning_rate")``."""
        section, name = split_key(key)
        return getattr(getattr(self, section), name)

    def with_value(self, key: str, value: Any) -> TrainConfig:
        """A validated copy with one dotted key changed (raises pydantic's ValidationError)."""
        data = self.model_dump()
        section, name = split_key(key)
        data[section][name] = value
        new = TrainConfig.model_validate(data, strict=False)
        new._source = self._source
        return new

    def resolve_paths(self, base: Path | str) -> TrainConfig:
        """A copy whose relative paths are made absolute against ``base`` (the config's folder)."""
        base = Path(base)
        data = self.model_dump()
        for spec in field_specs():
            if spec.kind != "path" and spec.kind != "prompts":
                continue
            section, name = split_key(spec.key)
            value = data[section][name]
            if isinstance(value, Path):
                value = value.expanduser()
                data[section][name] = value if value.is_absolute() else (base / value)
        new = TrainConfig.model_validate(data, strict=False)
        new._source = self._source
        return new

    def to_toml_data(self) -> dict[str, dict[str, Any]]:
        """Plain TOML-ready data: paths as POSIX strings, unset (None) keys left out."""
        out: dict[str, dict[str, Any]] = {}
        for section, model in self:
            table: dict[str, Any] = {}
            for name, value in model:
                if value is None:
                    continue
                table[name] = toml_value(value)
            out[section] = table
        return out


def toml_value(value: Any) -> Any:
    """A config value as written in TOML (paths become strings)."""
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, dict):
        return {k: toml_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [toml_value(v) for v in value]
    return value


# --- field metadata ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """What the TUI and the docs need to know about one key."""

    key: str  # "dataset.resolution"
    section: str
    name: str
    kind: str  # path | int | float | bool | choice | str | resolution | table | prompts | number
    description: str
    unit: str
    default: Any
    optional: bool  # may be unset (None)
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    advanced: bool = False
    sd_scripts: str | None = None  # how sd-scripts spells it (trainer.config.sd_options), if it has it


def split_key(key: str) -> tuple[str, str]:
    """``"dataset.resolution"`` -> ``("dataset", "resolution")``; unknown keys raise KeyError."""
    section, _, name = key.partition(".")
    model = SECTIONS.get(section)
    if model is None or name not in model.model_fields:
        raise KeyError(key)
    return section, name


def _kind(annotation: Any, name: str) -> tuple[str, bool, tuple[Any, ...]]:
    optional = False
    args = get_args(annotation)
    if get_origin(annotation) is not None and type(None) in args and len(args) == 2:
        optional = True
        annotation = next(a for a in args if a is not type(None))
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if name == "resolution":
        return "resolution", optional, ()
    if name in ("sample_prompts", "prompts"):
        return "prompts", optional, ()
    if get_origin(annotation) is Literal:
        return "choice", optional, get_args(annotation)
    if annotation is Path:
        return "path", optional, ()
    if annotation is bool:
        return "bool", optional, ()
    if annotation is int:
        return "int", optional, ()
    if annotation is float:
        return "float", optional, ()
    if annotation is str:
        return "str", optional, ()
    if get_origin(annotation) is dict:
        return "table", optional, ()
    return "number", optional, ()  # int | float (lr_warmup_steps)


_SPECS: list[FieldSpec] | None = None


def field_specs() -> list[FieldSpec]:
    """Every key of the config, in file order."""
    global _SPECS
    if _SPECS is None:
        specs = []
        for section, model in SECTIONS.items():
            for name, info in model.model_fields.items():
                kind, optional, choices = _kind(info.annotation, name)
                extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
                lo = hi = None
                exclusive = False
                for meta in info.metadata:
                    if getattr(meta, "ge", None) is not None:
                        lo = meta.ge
                    if getattr(meta, "gt", None) is not None:
                        lo, exclusive = meta.gt, True
                    if getattr(meta, "le", None) is not None:
                        hi = meta.le
                default = info.get_default(call_default_factory=True)
                specs.append(FieldSpec(
                    key=f"{section}.{name}", section=section, name=name, kind=kind,
                    description=info.description or "", unit=str(extra.get("unit", "")),
                    default=default, optional=optional, choices=choices, minimum=lo, maximum=hi,
                    exclusive_minimum=exclusive, advanced=bool(extra.get("advanced", False)),
                    sd_scripts=sd_label(f"{section}.{name}"),
                ))
        _SPECS = specs
    return list(_SPECS)


def field_spec(key: str) -> FieldSpec:
    """The :class:`FieldSpec` of one dotted key (KeyError when unknown)."""
    for spec in field_specs():
        if spec.key == key:
            return spec
    raise KeyError(key)


# Other tools' names for kazari keys, so "did you mean" can point from them to ours.
ALIASES = {
    "xformers": "training.attention", "sdpa": "training.attention", "mem_eff_attn": "training.attention",
    "cache_latents_to_disk": "dataset.cache_latents", "lr": "optimizer.learning_rate",
    "batch_size": "training.train_batch_size", "max_train_epoches": "training.max_train_epochs",
    "lr_restart_cycles": "optimizer.lr_scheduler_num_cycles", "network_args": "network.conv_dim",
    "num_repeats": "dataset.train_data_dir", "epochs": "training.max_train_epochs",
}


def all_keys() -> list[str]:
    return [s.key for s in field_specs()]


def suggest_key(wrong: str, section: str | None = None) -> str | None:
    """Closest known dotted key for a misspelt one (also matches a key put in the wrong section)."""
    keys = all_keys()
    names = {s.name: s.key for s in field_specs()}
    name = wrong.rpartition(".")[2]
    if name in names:
        return names[name]
    sd_names = dict(SD_TO_KAZARI)
    if name in sd_names or name in ALIASES:  # an sd-scripts / lora-scripts spelling
        return sd_names.get(name) or ALIASES[name]
    section_guess = wrong.partition(".")[0] if "." in wrong else section
    if section_guess and f"{section_guess}_{name}" in names:  # network.dim -> network.network_dim
        return names[f"{section_guess}_{name}"]
    # Compare key names, not dotted keys: a shared "training." prefix made `learning_rat` under
    # [training] look closest to `min_snr_gamma`. The section's own keys win when one is close enough.
    limit = max(1, len(name) // 3)
    own = [k for k in keys if section is not None and k.startswith(section + ".")]
    for pool in (own, keys):
        scored = sorted((edit_distance(name, k.rpartition(".")[2]), k) for k in pool)
        if scored and scored[0][0] <= limit:
            return scored[0][1]
    return None


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions, and swaps of neighbours count 1)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, previous2[j - 2] + 1)
            row.append(cost)
        previous2, previous = previous, row
    return previous[-1]

"""Interop with kohya-ss sd-scripts: import its TOMLs / lora-scripts variables, export ours.

sd-scripts facts this relies on (``library/train_util.py::read_config_from_file``,
``library/config_util.py``, Akegarasu/lora-scripts ``train.sh``):

* ``--config_file`` TOML: section names are arbitrary, every table is flattened into one
  namespace (one level), and unknown keys are silently kept as unused attributes — so kazari's
  own extras travel in a ``[kazari]`` table of ``kazari_*`` keys that sd-scripts ignores.
* ``--dataset_config`` TOML: ``[general]`` (subset defaults), ``[[datasets]]`` (resolution,
  batch_size, bucket options) and ``[[datasets.subsets]]`` (image_dir, num_repeats, is_reg,
  class_tokens, caption options). With it, folder names are *not* parsed for repeats.
* Options missing from a file take sd-scripts' argparse defaults (learning_rate 2e-6,
  network_alpha 1, caption_extension ".caption", no bucketing...), so an import starts there.
* lora-scripts ``train.sh`` / ``train.ps1``: shell variables (``lr="1e-4"``, ``$lr = "1e-4"``)
  with their own names (``max_train_epoches``, ``batch_size``, ``lr_restart_cycles``...), plus
  fixed ``--flags`` on the ``train_network.py`` command line.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import tomlkit

from tagging.atomic import atomic_write_text
from trainer.config.errors import ConfigError
from trainer.config.loading import parse_toml, plain_value, read_text, validate_data
from trainer.config.schema import TrainConfig, field_spec, toml_value
from trainer.config.sd_options import DIRECT, KAZARI_ONLY, SD_TO_KAZARI, ZERO_IS_UNSET, sd_option

# What a key is when sd-scripts does not get it (its argparse defaults, in kazari terms).
SD_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {},
    "dataset": {
        "caption_extension": ".caption", "shuffle_caption": False, "keep_tokens": 0, "flip_aug": False,
        "enable_bucket": False, "min_bucket_reso": 256, "max_bucket_reso": 1024, "bucket_reso_steps": 64,
        "bucket_no_upscale": False, "cache_latents": "off", "max_data_loader_n_workers": 8,
        "persistent_data_loader_workers": False, "prior_loss_weight": 1.0, "max_token_length": 75,
        "caption_dropout_rate": 0.0, "caption_tag_dropout_rate": 0.0, "caption_dropout_every_n_epochs": 0,
    },
    "network": {"network_dim": 4, "network_alpha": 1.0},
    "optimizer": {
        "optimizer_type": "AdamW", "learning_rate": 2e-6, "unet_lr": None, "text_encoder_lr": None,
        "lr_scheduler": "constant", "lr_warmup_steps": 0, "lr_scheduler_num_cycles": 1, "lr_scheduler_power": 1.0,
        "max_grad_norm": 1.0,
    },
    "training": {
        "train_batch_size": 1, "gradient_accumulation_steps": 1, "mixed_precision": "no", "seed": None,
        "clip_skip": 1, "attention": "math", "gradient_checkpointing": False, "noise_offset": 0.0,
        "min_snr_gamma": 0.0,
    },
    "output": {"output_name": "last", "save_model_as": "safetensors", "save_precision": "float",
               "save_every_n_epochs": 0, "save_state": False},
    "sample": {"sample_every_n_epochs": 0, "sample_sampler": "ddim"},
    "logging": {"logging_dir": None},
}

# sd-scripts options that do not change the trained LoRA, or that kazari fixes: not reported.
HARMLESS = {
    "network_module", "config_file", "output_config", "dataset_config", "log_with", "log_prefix",
    "log_tracker_name", "log_tracker_config", "wandb_run_name", "wandb_api_key", "log_config",
    "training_comment", "metadata_title", "metadata_author", "metadata_description", "metadata_license",
    "metadata_tags", "vae_batch_size", "lowram", "highvram", "no_metadata", "console_log_level",
    "console_log_file", "console_log_simple", "skip_cache_check", "sample_at_first", "tokenizer_cache_dir",
}


@dataclass
class KohyaImport:
    """The imported config plus what could not be carried over."""

    config: TrainConfig
    unmapped: dict[str, Any] = field(default_factory=dict)  # option -> value kazari does not use
    notes: list[str] = field(default_factory=list)  # assumptions worth reading; training is unchanged
    # Options kazari cannot carry over without training something else: the import is refused.
    errors: list[str] = field(default_factory=list)

    def report_lines(self) -> list[str]:
        lines = [f"not imported: {k} = {v!r}" for k, v in self.unmapped.items()]
        return [f"error: {e}" for e in self.errors] + lines + [f"note: {n}" for n in self.notes]


@dataclass
class KohyaExport:
    config_file: Path
    dataset_config: Path | None
    prompt_file: Path | None
    command: str
    notes: list[str] = field(default_factory=list)


# --- import ---------------------------------------------------------------------------------


def _coerce(key: str, value: Any) -> Any:
    """A value from a TOML or shell file, converted to the type of the kazari key."""
    spec = field_spec(key)
    if isinstance(value, str):
        text = value.strip()
        if text == "" and spec.kind != "str":
            return None
        if spec.kind == "bool":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
        if spec.kind in ("int", "float", "number") or (spec.kind == "choice" and text.isdigit()):
            try:
                number = float(text)
            except ValueError:
                return value
            if spec.kind == "float":
                return number
            return int(number) if number.is_integer() else number
        return text if spec.kind != "str" else value
    if isinstance(value, list) and spec.kind in ("float", "number") and len(set(map(str, value))) == 1:
        # sd-scripts writes text_encoder_lr as a list (one value per text encoder); SD 1.x has one.
        return _coerce(key, value[0])
    if spec.kind == "bool" and isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    if spec.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _literal(text: str) -> Any:
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return list(value) if isinstance(value, tuple) else value


def _key_values(items: Any) -> dict[str, Any]:
    """``["conv_dim=4", "betas=0.9,0.999"]`` (or a space-separated string) -> dict."""
    if isinstance(items, dict):
        return dict(items)
    if isinstance(items, str):
        items = items.split()
    out = {}
    for item in items or []:
        name, sep, value = str(item).partition("=")
        if sep:
            out[name.strip()] = _literal(value)
    return out


def _set(data: dict[str, dict[str, Any]], key: str, value: Any) -> None:
    section, name = key.split(".")
    data.setdefault(section, {})[name] = value


def flatten_kohya(doc: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts' reading of a --config_file: top-level values plus every table's keys (one level)."""
    flat: dict[str, Any] = {}
    for name, value in doc.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[name] = value
    return flat


def import_kohya_args(flat: dict[str, Any], *, source: str = "sd-scripts config") -> KohyaImport:
    """Flat sd-scripts options -> a kazari config (starting from sd-scripts' own defaults)."""
    data: dict[str, dict[str, Any]] = {s: dict(v) for s, v in SD_DEFAULTS.items()}
    unmapped: dict[str, Any] = {}
    notes: list[str] = []
    flat = dict(flat)
    kazari_extra = {k: flat.pop(k) for k in list(flat) if k.startswith("kazari_")}

    for name, value in flat.items():
        if name in SD_TO_KAZARI:
            key = SD_TO_KAZARI[name]
            if value is None or (isinstance(value, str) and value.strip() == "" and key != "output.output_name"):
                continue
            _set(data, key, _coerce(key, value))
        elif name in ("xformers", "sdpa", "mem_eff_attn"):
            if _truthy(value):
                chosen = "xformers" if name == "xformers" else "sdpa" if name == "sdpa" else "math"
                if name == "mem_eff_attn":
                    notes.append("mem_eff_attn is not available in kazari; plain math attention is used")
                current = data["training"].get("attention")
                # sd-scripts priority: mem_eff_attn > xformers > sdpa
                rank = {"math": 0, "sdpa": 1, "xformers": 2}
                if current == "math" or rank.get(chosen, 0) > rank.get(current or "", 0) or name == "mem_eff_attn":
                    data["training"]["attention"] = chosen
        elif name in ("cache_latents", "cache_latents_to_disk"):
            if _truthy(value):
                if name == "cache_latents_to_disk":
                    data["dataset"]["cache_latents"] = "disk"
                elif data["dataset"]["cache_latents"] == "off":
                    data["dataset"]["cache_latents"] = "memory"
        elif name == "max_token_length":
            data["dataset"]["max_token_length"] = 75 if value in (None, "", 0) else _coerce(
                "dataset.max_token_length", value)
        elif name == "network_args":
            items = value.split() if isinstance(value, str) else list(value or [])
            rest = []
            for item in items:
                arg, _, text = str(item).partition("=")
                if arg.strip() in ("conv_dim", "conv_alpha"):
                    key = f"network.{arg.strip()}"
                    _set(data, key, _coerce(key, text))
                else:
                    rest.append(item)
            if rest:
                unmapped["network_args"] = rest
        elif name == "optimizer_args":
            data["optimizer"]["optimizer_args"] = _key_values(value)
        elif name == "sample_prompts":
            if value:
                data["sample"]["sample_prompts"] = str(value)
        elif name == "max_train_steps":
            continue  # converted to epochs below, once the rest of the config is known
        elif name in ("use_8bit_adam", "use_lion_optimizer"):
            if _truthy(value):
                data["optimizer"]["optimizer_type"] = "AdamW8bit" if name == "use_8bit_adam" else "Lion"
        elif name == "network_module":
            if value not in (None, "", "networks.lora"):
                unmapped[name] = value
                notes.append(f"network_module {value!r} is not supported; kazari trains a plain LoRA "
                             "(networks.lora, with conv layers when conv_dim is set)")
        elif name in ("v2", "v_parameterization", "sdxl"):
            if _truthy(value):
                unmapped[name] = value
                notes.append(f"{name} is set, but kazari trains SD 1.x models only")
        elif name in HARMLESS:
            continue
        else:
            unmapped[name] = value
    steps = None
    if flat.get("max_train_epochs") in (None, ""):
        data["training"].pop("max_train_epochs", None)
        # sd-scripts trains max_train_steps (default 1600) when no epoch count is given.
        steps = flat.get("max_train_steps")
        steps = 1600 if steps in (None, "") else steps
    if not flat.get("resolution"):
        notes.append("resolution is not set (sd-scripts requires it); kazari uses its default 768,768")
        data["dataset"].pop("resolution", None)
    if not flat.get("output_dir"):
        data["output"].pop("output_dir", None)

    for name, value in kazari_extra.items():
        extra_key = {"kazari_device": "training.device", "kazari_tokenizer": "model.tokenizer",
               "kazari_sample_prompts": "sample.sample_prompts", "kazari_attention": "training.attention",
               "kazari_output_dir": "output.output_dir", "kazari_compile": "training.compile"}.get(name)
        if extra_key is None:
            unmapped[name] = value
        else:
            _set(data, extra_key, value)

    # A value kazari cannot take (a scheduler it lacks, a string where a number belongs) would train
    # something else if replaced: it is an error. Only [sample] options (previews, not the LoRA) fall
    # back to the default with a note. Each pass drops the bad keys so every problem is reported.
    errors: list[str] = []
    for _ in range(len(SD_TO_KAZARI) + 8):
        cfg, issues = validate_data(data)
        if cfg is not None:
            break
        for issue in issues:
            section, _, name = issue.key.partition(".")
            if section not in data or name not in data[section]:
                raise ConfigError(issues)  # pragma: no cover - every issue names a key we set
            value = data[section].pop(name)
            label = sd_option(issue.key) or issue.key
            unmapped[label] = value
            text = f"{label} = {value!r} ({source}) cannot be used: {issue.message}; {issue.fix}"
            if section == "sample":
                notes.append(f"{text} — samples use {issue.key} = {field_spec(issue.key).default!r} instead")
            else:
                errors.append(text)
    else:  # pragma: no cover - each pass removes at least one key
        raise ConfigError(issues)
    if steps is not None:
        epochs, error = _epochs_for_steps(cfg, steps)
        if error:
            errors.append(error)
        else:
            cfg.training.max_train_epochs = epochs
            notes.append(f"max_train_steps = {steps} is exactly {epochs} epochs of this dataset: "
                         f"training.max_train_epochs = {epochs}")
    return KohyaImport(cfg, unmapped, notes, errors)


def _epochs_for_steps(cfg: TrainConfig, steps: Any) -> tuple[int, str | None]:
    """sd-scripts' max_train_steps as kazari epochs — only when it is a whole number of epochs."""
    from tagging.errors import UserError
    from trainer.config.derived import derived_figures

    fix = "set max_train_epochs in the sd-scripts config (sd-scripts then ignores max_train_steps) and import again"
    try:
        steps = int(steps)
        per_epoch = derived_figures(cfg).steps_per_epoch
    except (TypeError, ValueError):
        return 0, f"max_train_steps = {steps!r} is not a whole number; {fix}"
    except UserError as err:
        return 0, (f"max_train_steps = {steps} cannot be converted to epochs without the dataset ({err}); {fix}")
    if per_epoch <= 0 or steps % per_epoch:
        lo = max(1, steps // max(per_epoch, 1))
        return 0, (f"max_train_steps = {steps} is not a whole number of epochs ({per_epoch} steps each); kazari "
                   f"trains whole epochs: {lo} epochs = {lo * per_epoch} steps or {lo + 1} = {(lo + 1) * per_epoch}; "
                   f"{fix}")
    return steps // per_epoch, None


def import_dataset_config(doc: dict[str, Any], flat: dict[str, Any], notes: list[str],
                          unmapped: dict[str, Any], errors: list[str]) -> None:
    """Merge a --dataset_config into the flat options (mapping subsets back to N_name folders)."""
    general = dict(doc.get("general", {}))
    datasets = list(doc.get("datasets", []))
    for name in doc:
        if name not in ("general", "datasets"):
            unmapped[f"dataset_config.{name}"] = doc[name]
    if not datasets:
        flat.update(general)
        return
    if len(datasets) > 1:
        notes.append(f"the dataset config has {len(datasets)} datasets; kazari uses the first one only")
        unmapped["dataset_config.datasets[1:]"] = datasets[1:]
    dataset = dict(datasets[0])
    subsets = list(dataset.pop("subsets", []))
    merged = {**general, **dataset}
    if "batch_size" in merged:
        merged["train_batch_size"] = merged.pop("batch_size")
    if isinstance(merged.get("resolution"), list):
        merged["resolution"] = ",".join(str(v) for v in merged["resolution"])
    subset_keys = ("caption_extension", "shuffle_caption", "keep_tokens", "flip_aug", "caption_dropout_rate",
                   "caption_tag_dropout_rate", "caption_dropout_every_n_epochs")
    train_dirs: list[Path] = []
    reg_dirs: list[Path] = []
    for i, subset in enumerate(subsets):
        image_dir = subset.get("image_dir")
        if not image_dir:
            unmapped[f"dataset_config.subsets[{i}]"] = subset
            notes.append(f"subset {i + 1} has no image_dir (fine-tuning metadata subsets are not supported)")
            continue
        path = Path(image_dir)
        (reg_dirs if subset.get("is_reg") else train_dirs).append(path)
        repeats = int(subset.get("num_repeats", 1))
        parsed = _folder_repeats(path.name)
        if parsed != repeats and not (parsed is None and repeats == 1 and len(subsets) == 1):
            errors.append(f"subset {path.name} has num_repeats = {repeats}, but kazari reads repeats from folder "
                          f"names ({parsed if parsed is not None else 'none'} here); rename the folder to "
                          f"{repeats}_{path.name.partition('_')[2] or path.name} and import again")
        for key in subset_keys:
            if key in subset and key not in merged:
                merged[key] = subset[key]
            elif key in subset and subset[key] != merged[key]:
                notes.append(f"subset {path.name} sets {key} = {subset[key]!r}; kazari applies one value to all "
                             f"folders and uses {merged[key]!r}")
        extra = set(subset) - {"image_dir", "num_repeats", "is_reg", "class_tokens", *subset_keys}
        for key in sorted(extra):
            unmapped[f"dataset_config.{path.name}.{key}"] = subset[key]
    for dirs, key in ((train_dirs, "train_data_dir"), (reg_dirs, "reg_data_dir")):
        if not dirs:
            continue
        if len(dirs) == 1 and _folder_repeats(dirs[0].name) is None:
            merged[key] = str(dirs[0])  # a plain image folder: kazari reads it as one folder, repeats 1
            continue
        parents = {d.parent for d in dirs}
        if len(parents) > 1:
            notes.append(f"{key}: the subsets live in different folders ({', '.join(sorted(map(str, parents)))}); "
                         f"kazari needs one parent folder and uses {sorted(parents)[0]}")
        merged[key] = str(sorted(parents)[0])
    for key, value in merged.items():
        if key in subset_keys or key in SD_TO_KAZARI or key in ("resolution", "train_batch_size"):
            flat[key] = value
        else:
            unmapped[f"dataset_config.{key}"] = value
    flat["enable_bucket"] = merged.get("enable_bucket", flat.get("enable_bucket", False))


def _folder_repeats(name: str) -> int | None:
    head, sep, _ = name.partition("_")
    return int(head) if sep and head.isdigit() else None


# lora-scripts train.sh / train.ps1 variable -> sd-scripts option.
SHELL_NAMES = {
    "pretrained_model": "pretrained_model_name_or_path", "is_v2_model": "v2",
    "parameterization": "v_parameterization", "batch_size": "train_batch_size",
    "max_train_epoches": "max_train_epochs", "lr": "learning_rate", "lr_restart_cycles": "lr_scheduler_num_cycles",
    "train_unet_only": "network_train_unet_only", "train_text_encoder_only": "network_train_text_encoder_only",
}
SHELL_IGNORED = {"multi_gpu", "lowram", "use_wandb", "wandb_api_key", "log_tracker_name", "algo", "dropout",
                 "conv_dim", "conv_alpha", "stop_text_encoder_training", "resume", "extArgs", "launchArgs"}
_ASSIGN = re.compile(r"""^\s*\$?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*("[^"]*"|'[^']*'|[^\s#]*)""")
_FLAG = re.compile(r"""--([A-Za-z0-9_]+)(?:[= ](?!-)("[^"]*"|'[^']*'|[^\s\\`"']+))?""")


def parse_shell_script(text: str) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """lora-scripts variables and fixed flags -> (flat sd-scripts options, unmapped, notes)."""
    variables: dict[str, str] = {}
    for line in text.splitlines():
        if line.lstrip().startswith(("#", "if ", "export ", "[")):
            continue
        match = _ASSIGN.match(line)
        if match:
            raw = match.group(2)
            variables[match.group(1)] = raw[1:-1] if raw[:1] in "\"'" and len(raw) >= 2 else raw
    flat: dict[str, Any] = {}
    unmapped: dict[str, Any] = {}
    notes: list[str] = []
    # Fixed flags after train_network.py (continuation lines end with \ or `).
    where = text.find("train_network.py")
    if where >= 0:
        command = []
        for line in text[where:].splitlines():
            command.append(line)
            if not line.rstrip().endswith(("\\", "`")):
                break
        # Array expansions (${extArgs[@]}, @ext_args) are the conditional flags: the variables cover them.
        joined = re.sub(r"\$\{\w+\[@\]\}|@\w+", " ", " ".join(command))

        def substitute(value: str) -> str:
            return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: variables.get(m.group(1), ""), value)

        for match in _FLAG.finditer(joined):
            name, value = match.group(1), match.group(2)
            if value is None:
                flat[name] = True
                continue
            value = substitute(value.strip("\"'"))
            flat[name] = value
    conv = {}
    for name, value in variables.items():
        if name in SHELL_IGNORED:
            if name in ("conv_dim", "conv_alpha"):
                conv[name] = value
            elif value not in ("", "0", "lora") and name not in ("extArgs", "launchArgs"):
                unmapped[name] = value
            continue
        option = SHELL_NAMES.get(name, name)
        if option in flat and name not in SHELL_NAMES and option not in SD_TO_KAZARI:
            continue
        if option in ("v2", "v_parameterization") and value in ("0", ""):
            continue
        flat[option] = value
    if variables.get("network_module") == "lycoris.kohya" and conv:
        flat["network_args"] = [f"{k}={v}" for k, v in conv.items()]
        notes.append(f"LyCORIS algo {variables.get('algo', 'lora')!r}: imported as kazari's LoCon-style conv "
                     "layers (conv_dim/conv_alpha)")
    return flat, unmapped, notes


def import_kohya(config_file: Path | str, dataset_config: Path | str | None = None) -> KohyaImport:
    """Import a sd-scripts --config_file TOML (or a lora-scripts train.sh/.ps1) [+ --dataset_config]."""
    path = Path(config_file)
    text = read_text(path)
    unmapped: dict[str, Any] = {}
    notes: list[str] = []
    errors: list[str] = []
    if path.suffix.lower() in (".sh", ".ps1", ".bash", ".bat", ".cmd"):
        flat, unmapped, notes = parse_shell_script(text)
        source = "lora-scripts variable"
    else:
        flat = flatten_kohya(plain_value(parse_toml(text, path)))
        source = "sd-scripts option"
    if dataset_config is not None:
        ds_path = Path(dataset_config)
        ds_doc = plain_value(parse_toml(read_text(ds_path), ds_path))
        for key in ("train_data_dir", "reg_data_dir"):
            if flat.pop(key, None):
                notes.append(f"{key} from the config file is ignored, as sd-scripts does with a dataset config")
        import_dataset_config(ds_doc, flat, notes, unmapped, errors)
    result = import_kohya_args(flat, source=source)
    result.unmapped = {**unmapped, **result.unmapped}
    result.notes = notes + result.notes
    result.errors = errors + result.errors
    return result


# --- export ---------------------------------------------------------------------------------


def kohya_args(cfg: TrainConfig, *, with_dataset_options: bool = True) -> dict[str, dict[str, Any]]:
    """The config as sectioned sd-scripts options (None and "off" values left out)."""
    out: dict[str, dict[str, Any]] = {}

    def put(section: str, name: str, value: Any) -> None:
        out.setdefault(section, {})[name] = toml_value(value)

    dataset_level = {"train_data_dir", "reg_data_dir", "resolution", "caption_extension", "shuffle_caption",
                     "keep_tokens", "caption_dropout_rate", "caption_tag_dropout_rate",
                     "caption_dropout_every_n_epochs", "flip_aug", "enable_bucket", "min_bucket_reso",
                     "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale"}
    for key, (name, section) in DIRECT.items():
        value = cfg.get(key)
        if value is None or (not with_dataset_options and name in dataset_level):
            continue
        put(section, name, value)
    for key, (name, section) in ZERO_IS_UNSET.items():
        value = cfg.get(key)
        if value:
            put(section, name, value)
    put("additional_network_arguments", "network_module", "networks.lora")
    n = cfg.network
    net_args = [f"conv_dim={n.conv_dim}"] if n.conv_dim is not None else []
    if n.conv_alpha is not None:
        net_args.append(f"conv_alpha={n.conv_alpha:g}")
    if net_args:
        put("additional_network_arguments", "network_args", net_args)
    if cfg.optimizer.optimizer_args:
        put("optimizer_arguments", "optimizer_args", [
            f"{k}={_arg_text(v)}" for k, v in cfg.optimizer.optimizer_args.items()])
    d = cfg.dataset
    if d.cache_latents != "off":
        put("dataset_arguments", "cache_latents", True)
    if d.cache_latents == "disk":
        put("dataset_arguments", "cache_latents_to_disk", True)
    if d.max_token_length != 75:
        put("dataset_arguments", "max_token_length", d.max_token_length)
    attention = cfg.training.attention
    if attention in ("xformers", "sdpa"):
        put("training_arguments", attention, True)
    prompts = cfg.sample.sample_prompts
    if isinstance(prompts, PurePath):
        put("sample_prompt_arguments", "sample_prompts", prompts)
    for key in KAZARI_ONLY:
        value = cfg.get(key)
        if value is not None:
            put("kazari", "kazari_" + key.split(".")[1], value)
    if isinstance(prompts, list) and prompts:
        put("kazari", "kazari_sample_prompts", prompts)
    return out


def _arg_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(_arg_text(v) for v in value)
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def dataset_config_data(cfg: TrainConfig, dataset: Any) -> dict[str, Any]:
    """The --dataset_config for ``cfg`` and its opened ``tagging.dataset.Dataset``."""
    d = cfg.dataset
    general = {
        "caption_extension": d.caption_extension, "shuffle_caption": d.shuffle_caption,
        "keep_tokens": d.keep_tokens, "flip_aug": d.flip_aug, "caption_dropout_rate": d.caption_dropout_rate,
        "caption_tag_dropout_rate": d.caption_tag_dropout_rate,
        "caption_dropout_every_n_epochs": d.caption_dropout_every_n_epochs,
    }
    w, h = d.resolution_wh
    entry: dict[str, Any] = {
        "resolution": [w, h], "batch_size": cfg.training.train_batch_size, "enable_bucket": d.enable_bucket,
        "min_bucket_reso": d.min_bucket_reso, "max_bucket_reso": d.max_bucket_reso,
        "bucket_reso_steps": d.bucket_reso_steps, "bucket_no_upscale": d.bucket_no_upscale,
    }
    subsets = []
    for folder in list(dataset.folders) + list(getattr(dataset, "reg_folders", [])):
        subset: dict[str, Any] = {"image_dir": Path(folder.path).as_posix(), "num_repeats": folder.repeats}
        if folder.is_reg:
            subset["is_reg"] = True
        tokens = getattr(folder, "class_tokens", "") or ""
        if tokens:
            subset["class_tokens"] = tokens
        subsets.append(subset)
    entry["subsets"] = subsets
    return {"general": general, "datasets": [entry]}


def export_kohya(cfg: TrainConfig, out_dir: Path | str, *, dataset: Any = None,
                 script: str = "train_network.py", force: bool = False) -> KohyaExport:
    """Write ``config.toml`` (+ ``dataset.toml``, ``sample_prompts.txt``) into ``out_dir``.

    Files that already hold exactly the new content are left alone; a file there with other
    content (an earlier export the user may have edited) is not overwritten unless ``force``.
    """
    from tagging.errors import UserError

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; the export needs a folder for config.toml and dataset.toml.",
                        path=out, hint="Pass a folder name to -o, e.g. -o kohya-export.")
    notes: list[str] = []
    if dataset is None and cfg.dataset.train_data_dir is not None and Path(cfg.dataset.train_data_dir).is_dir():
        from tagging.dataset import Dataset
        from tagging.errors import DatasetError

        try:
            dataset = Dataset.open(cfg.dataset.train_data_dir, caption_ext=cfg.dataset.caption_extension,
                                   reg_root=cfg.dataset.reg_data_dir)
        except DatasetError as exc:
            notes.append(f"dataset not readable ({exc}); exported train_data_dir instead of a dataset config")
    use_dataset = dataset is not None and bool(dataset.folders)
    if not use_dataset and not notes:
        notes.append("no readable dataset: exported train_data_dir/reg_data_dir (sd-scripts parses N_name folders)")
    args = kohya_args(cfg, with_dataset_options=not use_dataset)
    # sd-scripts writes its own LoRA files, with the same names: into a folder of its own, never
    # over kazari's. kazari's output_dir travels in [kazari] so an import gives it back.
    if cfg.output.output_dir is not None:
        args.setdefault("kazari", {})["kazari_output_dir"] = toml_value(cfg.output.output_dir)
    args.setdefault("saving_arguments", {})["output_dir"] = (out / "output").resolve().as_posix()
    notes.append(f"sd-scripts saves into {out / 'output'}, not kazari's output_dir, so neither overwrites the other")
    notes.append(_tokenizer_cache(cfg, out, args))
    writes: list[tuple[Path, str]] = []
    prompt_file = None
    if isinstance(cfg.sample.sample_prompts, list) and cfg.sample.sample_prompts:
        prompt_file = out / "sample_prompts.txt"
        writes.append((prompt_file, "\n".join(cfg.sample.sample_prompts) + "\n"))
        args.setdefault("sample_prompt_arguments", {})["sample_prompts"] = prompt_file.resolve().as_posix()
    dataset_path = None
    if use_dataset:
        dataset_path = out / "dataset.toml"
        args.setdefault("training_arguments", {})["train_batch_size"] = cfg.training.train_batch_size
        writes.append((dataset_path, _dump("kazari export: sd-scripts --dataset_config",
                                           dataset_config_data(cfg, dataset))))
    config_path = out / "config.toml"
    order = ["model_arguments", "additional_network_arguments", "optimizer_arguments", "dataset_arguments",
             "training_arguments", "saving_arguments", "sample_prompt_arguments", "logging_arguments", "kazari"]
    ordered = {s: args[s] for s in order if s in args}
    writes.append((config_path, _dump(
        "kazari export: sd-scripts --config_file (sd-scripts ignores the kazari_* keys of [kazari])", ordered)))
    _write_export(out, writes, force)
    parts = ["accelerate", "launch", "--num_cpu_threads_per_process", "1", script,
             f"--config_file={config_path.resolve().as_posix()}"]
    if dataset_path is not None:
        parts.append(f"--dataset_config={dataset_path.resolve().as_posix()}")
    command = " ".join(shlex.quote(p) for p in parts)
    return KohyaExport(config_path, dataset_path, prompt_file, command, notes)


SD_SCRIPTS_TOKENIZER = "openai/clip-vit-large-patch14"  # sd-scripts' SD 1.x tokenizer (library/train_util.py)


def _tokenizer_cache(cfg: TrainConfig, out: Path, args: dict[str, dict[str, Any]]) -> str:
    """Point sd-scripts' ``tokenizer_cache_dir`` into the export, so the printed command runs offline.

    sd-scripts loads ``<tokenizer_cache_dir>/openai_clip-vit-large-patch14`` when it exists, else
    downloads the tokenizer (and saves it there). A local tokenizer kazari was given is copied in.
    """
    import shutil

    cache = out / "tokenizers"
    args.setdefault("model_arguments", {})["tokenizer_cache_dir"] = cache.resolve().as_posix()
    target = cache / SD_SCRIPTS_TOKENIZER.replace("/", "_")
    source = cfg.model.tokenizer
    if source is not None and Path(source).is_dir() and not target.exists():
        target.mkdir(parents=True)
        for item in Path(source).iterdir():
            if item.is_file():
                shutil.copyfile(item, target / item.name)
        return f"copied the tokenizer {source} to {target} (sd-scripts' tokenizer_cache_dir) for offline use"
    if target.is_dir():
        return f"sd-scripts loads its tokenizer from {target}"
    return (f"sd-scripts needs the CLIP tokenizer {SD_SCRIPTS_TOKENIZER}: offline, put its files (vocab.json, "
            f"merges.txt, tokenizer_config.json, special_tokens_map.json) in {target}; online, sd-scripts "
            "downloads it and saves it there")


def _write_export(out: Path, writes: list[tuple[Path, str]], force: bool) -> None:
    """All-or-nothing check first (nothing is written when one file would be clobbered), then write."""
    from tagging.errors import UserError

    changed = []
    for path, text in writes:
        try:
            old = path.read_bytes() if path.exists() else None
        except OSError as exc:
            raise UserError(f"Cannot read {path}: {exc.strerror or exc}.", path=path) from None
        if old == text.encode("utf-8"):
            continue  # already exported with exactly this content: do not touch the file
        if old is not None and not force:
            raise UserError(
                f"{path} already exists with other content (an earlier export, maybe edited by hand); "
                "kazari does not overwrite it.",
                path=path, hint="Export into another folder, or pass --force to replace the files.")
        changed.append((path, text))
    try:
        out.mkdir(parents=True, exist_ok=True)
        for path, text in changed:
            atomic_write_text(path, text)
    except OSError as exc:
        raise UserError(f"Cannot write the export into {out}: {exc.strerror or exc}.", path=out,
                        hint="Check that the folder is writable, or choose another one with -o.") from None


def _dump(header: str, data: dict[str, Any]) -> str:
    doc = tomlkit.document()
    doc.add(tomlkit.comment(header))
    for key, value in data.items():
        doc.add(key, value)
    return tomlkit.dumps(doc)


"""sd-scripts interop: import --config_file / --dataset_config / lora-scripts variables; export; round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit
from PIL import Image

from trainer.config import PRESETS, preset
from trainer.config.kohya import export_kohya, import_kohya, parse_shell_script

# A sd-scripts --config_file in the style kohya-colab / lora-scripts generate (arbitrary section names).
KOHYA_TOML = """\
[model_arguments]
pretrained_model_name_or_path = "/models/anime-base.safetensors"
v2 = false

[additional_network_arguments]
network_module = "networks.lora"
network_dim = 16
network_alpha = 8
network_args = ["conv_dim=4", "conv_alpha=1", "down_lr_weight=1,1,1"]
unet_lr = 5e-4
text_encoder_lr = 1e-4

[optimizer_arguments]
optimizer_type = "AdamW8bit"
learning_rate = 5e-4
lr_scheduler = "cosine_with_restarts"
lr_scheduler_num_cycles = 3
lr_warmup_steps = 75
lr_restart_cycles = 1
optimizer_args = ["weight_decay=0.1", "betas=0.9,0.99"]

[training_arguments]
max_train_epochs = 15
save_every_n_epochs = 1
train_batch_size = 3
clip_skip = 2
max_token_length = 225
mixed_precision = "fp16"
save_precision = "fp16"
xformers = true
output_dir = "/out/mychar"
output_name = "mychar"
log_with = "tensorboard"

[dataset_arguments]
cache_latents = true
train_data_dir = "/data/mychar"
resolution = "512,512"
"""


def test_import_config_file_maps_options_and_reports_unknown(tmp_path: Path) -> None:
    path = tmp_path / "training_config.toml"
    path.write_text(KOHYA_TOML)
    result = import_kohya(path)
    cfg = result.config
    assert cfg.model.pretrained_model == Path("/models/anime-base.safetensors")
    assert (cfg.network.network_dim, cfg.network.network_alpha) == (16, 8.0)
    assert (cfg.network.conv_dim, cfg.network.conv_alpha) == (4, 1.0)
    assert (cfg.optimizer.unet_lr, cfg.optimizer.text_encoder_lr, cfg.optimizer.learning_rate) == (5e-4, 1e-4, 5e-4)
    assert cfg.optimizer.optimizer_type == "AdamW8bit" and cfg.optimizer.lr_scheduler_num_cycles == 3
    assert cfg.optimizer.optimizer_args == {"weight_decay": 0.1, "betas": [0.9, 0.99]}
    assert cfg.training.max_train_epochs == 15 and cfg.training.train_batch_size == 3
    assert cfg.training.attention == "xformers" and cfg.dataset.cache_latents == "memory"
    assert cfg.dataset.max_token_length == 225 and cfg.dataset.resolution == "512,512"
    assert cfg.output.output_dir == Path("/out/mychar") and cfg.output.output_name == "mychar"
    # keys the file does not give take sd-scripts' defaults, not kazari's
    assert cfg.dataset.caption_extension == ".caption" and not cfg.dataset.shuffle_caption
    assert not cfg.dataset.enable_bucket and cfg.training.seed is None
    # unknown options are reported, not dropped; lora-scripts' lr_restart_cycles is not an sd-scripts option
    assert result.unmapped["lr_restart_cycles"] == 1
    assert result.unmapped["network_args"] == ["down_lr_weight=1,1,1"]
    assert "log_with" not in result.unmapped  # harmless logging option


def test_import_with_dataset_config_maps_subsets_to_folders(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(KOHYA_TOML)
    (tmp_path / "dataset.toml").write_text("""\
[general]
shuffle_caption = true
caption_extension = ".txt"
keep_tokens = 1
flip_aug = true

[[datasets]]
resolution = [640, 768]
batch_size = 4
enable_bucket = true
min_bucket_reso = 320
max_bucket_reso = 1280

  [[datasets.subsets]]
  image_dir = "/data/chars/10_mychar"
  num_repeats = 10
  class_tokens = "mychar girl"

  [[datasets.subsets]]
  image_dir = "/data/chars/4_outfit"
  num_repeats = 5

  [[datasets.subsets]]
  image_dir = "/data/reg/1_girl"
  is_reg = true
  num_repeats = 1
  random_crop = true
""")
    result = import_kohya(tmp_path / "config.toml", tmp_path / "dataset.toml")
    d = result.config.dataset
    assert d.train_data_dir == Path("/data/chars") and d.reg_data_dir == Path("/data/reg")
    assert d.resolution == "640,768" and d.enable_bucket and (d.min_bucket_reso, d.max_bucket_reso) == (320, 1280)
    assert d.shuffle_caption and d.keep_tokens == 1 and d.flip_aug and d.caption_extension == ".txt"
    assert result.config.training.train_batch_size == 4
    # kazari reads repeats from folder names: a subset that disagrees refuses the import, with the fix.
    assert [e for e in result.errors if "4_outfit" in e and "5_outfit" in e] == result.errors != []
    assert result.unmapped["dataset_config.1_girl.random_crop"] is True
    assert any("train_data_dir from the config file is ignored" in n for n in result.notes)


TRAIN_SH = """\
#!/bin/bash
pretrained_model="./sd-models/model.ckpt" # base model path
is_v2_model=0
train_data_dir="./train/aki"
reg_data_dir=""
network_module="networks.lora"
network_weights=""
network_dim=32
network_alpha=32
resolution="512,512"
batch_size=1
max_train_epoches=10
save_every_n_epochs=2
train_unet_only=1
train_text_encoder_only=0
noise_offset="0"
keep_tokens=0
min_snr_gamma=0
lr="1e-4"
unet_lr="1e-4"
text_encoder_lr="1e-5"
lr_scheduler="cosine_with_restarts"
lr_warmup_steps=0
lr_restart_cycles=1
output_name="aki"
save_model_as="safetensors"
min_bucket_reso=256
max_bucket_reso=1024
persistent_data_loader_workers=0
clip_skip=2
multi_gpu=0
optimizer_type="AdamW8bit"
use_wandb=1

if [[ $train_unet_only == 1 ]]; then extArgs+=("--network_train_unet_only"); fi

python -m accelerate.commands.launch --num_cpu_threads_per_process=8 "./sd-scripts/train_network.py" \\
  --enable_bucket \\
  --pretrained_model_name_or_path=$pretrained_model \\
  --train_data_dir=$train_data_dir \\
  --output_dir="./output" \\
  --logging_dir="./logs" \\
  --resolution=$resolution \\
  --max_train_epochs=$max_train_epoches \\
  --learning_rate=$lr \\
  --lr_scheduler_num_cycles=$lr_restart_cycles \\
  --train_batch_size=$batch_size \\
  --mixed_precision="fp16" \\
  --save_precision="fp16" \\
  --seed="1337" \\
  --cache_latents \\
  --prior_loss_weight=1 \\
  --max_token_length=225 \\
  --caption_extension=".txt" \\
  --xformers --shuffle_caption ${extArgs[@]}
"""


def test_import_lora_scripts_train_sh(tmp_path: Path) -> None:
    path = tmp_path / "train.sh"
    path.write_text(TRAIN_SH)
    result = import_kohya(path)
    cfg = result.config
    assert cfg.model.pretrained_model == Path("sd-models/model.ckpt")
    assert cfg.dataset.train_data_dir == Path("train/aki") and cfg.dataset.reg_data_dir is None
    assert cfg.training.max_train_epochs == 10 and cfg.training.train_batch_size == 1
    assert cfg.optimizer.learning_rate == 1e-4 and cfg.optimizer.text_encoder_lr == 1e-5
    assert cfg.network.train_unet_only and not cfg.network.train_text_encoder_only
    assert cfg.output.save_every_n_epochs == 2 and cfg.output.output_name == "aki"
    # the script's fixed flags
    assert cfg.training.mixed_precision == "fp16" and cfg.training.seed == 1337
    assert cfg.dataset.cache_latents == "memory" and cfg.dataset.max_token_length == 225
    assert cfg.dataset.caption_extension == ".txt" and cfg.dataset.shuffle_caption and cfg.dataset.enable_bucket
    assert cfg.training.attention == "xformers" and cfg.training.noise_offset == 0
    assert result.unmapped.get("use_wandb") == "1"


def test_import_powershell_variables() -> None:
    flat, unmapped, _ = parse_shell_script('$pretrained_model = "./m.safetensors"\n$lr = "2e-4"\n$batch_size = 3\n')
    assert flat == {"pretrained_model_name_or_path": "./m.safetensors", "learning_rate": "2e-4",
                    "train_batch_size": "3"}
    assert unmapped == {}


def test_unusable_imported_values_are_errors_except_for_samples(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[x]\nnetwork_dim = "lots"\nresolution = "512,512"\nmax_train_epochs = 1\n'
                    'sample_sampler = "k_dpmpp_2m"\nlr_scheduler = "cosine_with_min_lr"\n')
    result = import_kohya(path)
    assert result.unmapped == {"network_dim": "lots", "sample_sampler": "k_dpmpp_2m",
                               "lr_scheduler": "cosine_with_min_lr"}
    # A different LoRA would be trained: refused. A preview sampler only changes samples: a note.
    assert len(result.errors) == 2
    assert any(e.startswith("network_dim") and "whole number" in e for e in result.errors)
    assert any(e.startswith("lr_scheduler = 'cosine_with_min_lr'") for e in result.errors)
    assert result.config.sample.sample_sampler == "euler_a"
    assert any(n.startswith("sample_sampler") for n in result.notes)


def test_text_encoder_lr_list_is_its_value(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[x]\nresolution = "512,512"\nmax_train_epochs = 1\ntext_encoder_lr = [2e-5]\n')
    result = import_kohya(path)
    assert result.errors == [] and result.config.optimizer.text_encoder_lr == 2e-5


def test_max_train_steps_becomes_epochs_only_when_exact(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "2_kazari"
    folder.mkdir(parents=True)
    for i in range(3):  # 3 images x 2 repeats, batch 1 = 6 steps per epoch
        Image.new("RGB", (512, 512), "white").save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("kazari\n")
    base = f'[x]\nresolution = "512,512"\ntrain_data_dir = "{(tmp_path / "data").as_posix()}"\n'
    path = tmp_path / "c.toml"
    path.write_text(base + "max_train_steps = 24\n")
    result = import_kohya(path)
    assert result.errors == [] and result.config.training.max_train_epochs == 4
    path.write_text(base + "max_train_steps = 25\n")
    result = import_kohya(path)
    assert len(result.errors) == 1 and "4 epochs = 24 steps or 5 = 30" in result.errors[0]
    path.write_text(base.replace((tmp_path / "data").as_posix(), (tmp_path / "gone").as_posix()))
    result = import_kohya(path)  # no epochs, no steps: sd-scripts trains 1600 steps; unknowable here
    assert len(result.errors) == 1 and "max_train_steps = 1600" in result.errors[0]


def test_cli_import_refuses_and_writes_nothing(tmp_path: Path) -> None:
    from tui.cli import main

    path = tmp_path / "c.toml"
    path.write_text('[x]\nresolution = "512,512"\nmax_train_epochs = 1\nlr_scheduler = "cosine_with_min_lr"\n')
    out = tmp_path / "k.toml"
    assert main(["config", "import-kohya", str(path), "-o", str(out)]) == 1
    assert not out.exists()


def test_plain_folder_subset_round_trips(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "pics" / "a.png")
    cfg = preset("quick-test", dataset={"train_data_dir": tmp_path / "pics"})
    out = export_kohya(cfg, tmp_path / "k")
    assert out.dataset_config is not None
    back = import_kohya(out.config_file, out.dataset_config)
    assert back.config == cfg and back.notes == []


def make_dataset(tmp_path: Path) -> Path:
    for folder in ("10_kazari", "3_kazari casual"):
        (tmp_path / "data" / folder).mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(tmp_path / "data" / folder / "a.png")
        (tmp_path / "data" / folder / "a.txt").write_text("kazari, 1girl")
    (tmp_path / "reg" / "1_girl").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(tmp_path / "reg" / "1_girl" / "r.png")
    return tmp_path


def test_export_writes_sd_scripts_files_and_command(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    cfg = preset("anime-character", model={"pretrained_model": tmp_path / "base.safetensors"},
                 dataset={"train_data_dir": tmp_path / "data", "reg_data_dir": tmp_path / "reg"},
                 network={"conv_dim": 8}, sample={"sample_prompts": ["kazari, smile --w 512 --h 768 --d 1"]})
    out = export_kohya(cfg, tmp_path / "kohya")
    config = tomlkit.parse(out.config_file.read_text()).unwrap()
    flat = {k: v for table in config.values() for k, v in table.items()}
    assert flat["pretrained_model_name_or_path"] == (tmp_path / "base.safetensors").as_posix()
    assert flat["network_module"] == "networks.lora" and flat["network_args"] == ["conv_dim=8"]
    assert flat["sdpa"] is True and flat["cache_latents"] is True and flat["max_token_length"] == 225
    assert "train_data_dir" not in flat  # the dataset config carries the folders
    assert Path(flat["sample_prompts"]).read_text() == "kazari, smile --w 512 --h 768 --d 1\n"
    dataset = tomlkit.parse(out.dataset_config.read_text()).unwrap()
    subsets = dataset["datasets"][0]["subsets"]
    assert {(Path(s["image_dir"]).name, s["num_repeats"], s.get("is_reg", False)) for s in subsets} == {
        ("10_kazari", 10, False), ("3_kazari casual", 3, False), ("1_girl", 1, True)}
    assert dataset["datasets"][0]["resolution"] == [768, 768] and dataset["general"]["keep_tokens"] == 1
    assert {s.get("class_tokens") for s in subsets} >= {"kazari", "kazari casual"}
    assert out.command.startswith("accelerate launch --num_cpu_threads_per_process 1 train_network.py ")
    assert f"--config_file={out.config_file.resolve().as_posix()}" in out.command
    assert "--dataset_config=" in out.command


@pytest.mark.parametrize("name", PRESETS)
def test_round_trip_without_dataset(tmp_path: Path, name: str) -> None:
    cfg = preset(name, model={"pretrained_model": "models/base.safetensors", "tokenizer": "tok"},
                 dataset={"train_data_dir": "missing/data"}, training={"seed": None},
                 optimizer={"optimizer_args": {"weight_decay": 0.01, "betas": [0.9, 0.99], "decouple": True}},
                 sample={"sample_prompts": ["a --w 512", "b"]})
    out = export_kohya(cfg, tmp_path / "k")
    assert out.dataset_config is None
    back = import_kohya(out.config_file)
    assert back.unmapped == {}
    assert back.config == cfg


def test_round_trip_with_dataset_config(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    cfg = preset("low-vram", model={"pretrained_model": tmp_path / "m.safetensors"},
                 dataset={"train_data_dir": tmp_path / "data", "reg_data_dir": tmp_path / "reg",
                          "cache_latents": "disk", "flip_aug": True, "bucket_no_upscale": True},
                 network={"conv_dim": 4, "conv_alpha": 2.0}, training={"attention": "math", "noise_offset": 0.05},
                 output={"save_every_n_epochs": 0, "save_model_as": "ckpt"},
                 sample={"sample_prompts": tmp_path / "prompts.txt"}, logging={"logging_dir": None})
    out = export_kohya(cfg, tmp_path / "k")
    back = import_kohya(out.config_file, out.dataset_config)
    assert back.unmapped == {}
    assert back.config == cfg


def test_one_table_of_sd_scripts_names_agrees_everywhere() -> None:
    """The Config help line, the manual, export and import all read trainer.config.sd_options."""
    from trainer.config.docs import render_manual
    from trainer.config.kohya import kohya_args
    from trainer.config.schema import SECTIONS, field_specs
    from trainer.config.sd_options import DIRECT, SD_TO_KAZARI, ZERO_IS_UNSET, sd_label

    manual = render_manual().split("\n## [")
    rows = {}
    for chunk in manual[1:]:
        section = chunk.split("]", 1)[0]
        if section not in SECTIONS:
            continue
        for line in chunk.splitlines():
            if line.startswith("| `"):
                rows[f"{section}.{line.split('`')[1]}"] = line
    for spec in field_specs():
        label = sd_label(spec.key)
        assert spec.sd_scripts == label  # what the Config screen shows
        cell = rows[spec.key].rstrip(" |").rsplit("| ", 1)[-1]
        assert cell == (f"`{label}`" if label else cell) and (label or "`" not in cell), (spec.key, cell)
    # Keys sd-scripts has no option for never claim one (they once showed --device, --tokenizer...).
    for key in ("training.device", "model.tokenizer"):
        assert sd_label(key) is None
    assert "--sdpa" in sd_label("training.attention")
    assert "network_args" in sd_label("network.conv_dim")
    # Export writes each 1:1 key under its table name, and import maps that name back.
    cfg = preset("anime-character")
    cfg.training.seed = 7
    args = kohya_args(cfg)
    for key, (name, section) in {**DIRECT, **ZERO_IS_UNSET}.items():
        if cfg.get(key) not in (None, 0) and key != "model.pretrained_model":
            assert name in args[section], key
        assert SD_TO_KAZARI[name] == key


def test_export_runs_offline_and_never_shares_kazari_outputs(tmp_path: Path) -> None:
    tok = tmp_path / "clip-tokenizer"
    tok.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (tok / name).write_text("{}")
    cfg = preset("anime-character")
    cfg.output.output_dir = tmp_path / "kazari-out"
    cfg.model.tokenizer = tok
    out = tmp_path / "export"
    export_kohya(cfg, out)
    doc = tomlkit.parse((out / "config.toml").read_text()).unwrap()
    assert doc["saving_arguments"]["output_dir"] == (out / "output").resolve().as_posix()
    cache = Path(doc["model_arguments"]["tokenizer_cache_dir"])
    assert sorted(p.name for p in (cache / "openai_clip-vit-large-patch14").iterdir()) == [
        "merges.txt", "tokenizer_config.json", "vocab.json"]
    back = import_kohya(out / "config.toml")
    assert back.errors == [] and back.config.output.output_dir == tmp_path / "kazari-out"
    assert "tokenizer_cache_dir" not in back.unmapped

"""Every kind of config mistake yields a message with the key, the line, the value and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from trainer.config import ConfigError, ConfigIssue, check_config, load_config, preset
from trainer.config.loading import parse_config_text


def make_model(folder: Path) -> Path:
    """A stand-in diffusers folder (the checks only look for model_index.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


def make_images(folder: Path, sizes: list[tuple[int, int]], caption: str = "kazari, 1girl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (i * 40 % 256, 90, 160)).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(caption)
    return folder


def valid_setup(tmp_path: Path) -> Path:
    make_model(tmp_path / "model")
    make_images(tmp_path / "data" / "10_kazari", [(64, 64), (64, 96)])
    return tmp_path


BASE = """\
# my character
[model]
pretrained_model = "model"   # the base

[dataset]
train_data_dir = "data"
resolution = "512,512"
"""


def write(tmp_path: Path, text: str, name: str = "train.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def issues_of(tmp_path: Path, text: str) -> list[ConfigIssue]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.issues


def only(issues: list[ConfigIssue], key: str) -> ConfigIssue:
    hits = [i for i in issues if i.key == key]
    assert len(hits) == 1, [str(i) for i in issues]
    return hits[0]


def test_valid_config_loads_with_paths_resolved_against_its_folder(tmp_path: Path, monkeypatch) -> None:
    valid_setup(tmp_path)
    monkeypatch.chdir("/")
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.model.pretrained_model == tmp_path / "model"
    assert cfg.dataset.train_data_dir == tmp_path / "data"
    assert cfg.output.output_dir == tmp_path / "output"
    assert cfg.source_path == tmp_path / "train.toml"
    assert cfg.dataset.resolution_wh == (512, 512)


def test_unknown_key_says_did_you_mean_with_line(tmp_path: Path) -> None:
    valid_setup(tmp_path)
    issue = only(issues_of(tmp_path, BASE + "shufle_caption = true\n"), "dataset.shufle_caption")
    assert issue.line == 8 and issue.code == "unknown-key"
    assert "did you mean shuffle_caption" in issue.fix
    assert "train.toml:8: dataset.shufle_caption = true" in str(issue)


def test_key_in_the_wrong_section_points_to_the_right_one(tmp_path: Path) -> None:
    valid_setup(tmp_path)
    issue = only(issues_of(tmp_path, BASE + "learning_rate = 1e-4\n"), "dataset.learning_rate")
    assert "optimizer.learning_rate" in issue.fix and issue.line == 8


def test_unknown_section_and_key_outside_sections(tmp_path: Path) -> None:
    valid_setup(tmp_path)
    issues = issues_of(tmp_path, "seed = 3\n" + BASE + "[trainig]\nseed = 1\n")
    section = only(issues, "trainig")
    assert "did you mean [training]" in section.fix and section.line == 9
    top = only(issues, "seed")
    assert top.line == 1 and "training.seed" in top.fix


def test_wrong_type_names_value_line_and_example(tmp_path: Path) -> None:
    valid_setup(tmp_path)
    issue = only(issues_of(tmp_path, BASE + "[network]\nnetwork_dim = \"64\"\n"), "network.network_dim")
    assert issue.line == 9 and issue.value == "64" and issue.code == "wrong-type"
    assert "whole number" in issue.message and "network_dim = 64" in issue.fix
    text = str(issue)
    assert text.startswith(str(tmp_path / "train.toml") + ":9: network.network_dim = \"64\"")


def test_bool_and_choice_mistakes(tmp_path: Path) -> None:
    valid_setup(tmp_path)
    issues = issues_of(tmp_path, BASE + "flip_aug = \"yes\"\n[optimizer]\nlr_scheduler = \"cosine_restarts\"\n")
    assert "true or false" in only(issues, "dataset.flip_aug").message
    choice = only(issues, "optimizer.lr_scheduler")
    assert choice.line == 10 and 'did you mean "cosine_with_restarts"' in choice.fix
    assert "constant_with_warmup" in choice.fix


def test_out_of_range(tmp_path: Path) -> None:
    valid_setup(tmp_path)
    issue = only(issues_of(tmp_path, BASE + "caption_dropout_rate = 1.5\n"), "dataset.caption_dropout_rate")
    assert issue.message == "out of range" and "at most 1" in issue.fix and issue.value == 1.5


def test_resolution_not_multiple_of_64(tmp_path: Path) -> None:
    valid_setup(tmp_path)
    issue = only(issues_of(tmp_path, BASE.replace('"512,512"', '"700,512"')), "dataset.resolution")
    assert issue.line == 7 and issue.value == "700,512" and issue.severity == "error"
    assert "multiple of 64" in issue.message and '"640,512"' in issue.fix and '"704,512"' in issue.fix


def test_malformed_resolution(tmp_path: Path) -> None:
    valid_setup(tmp_path)
    issue = only(issues_of(tmp_path, BASE.replace('"512,512"', '"big"')), "dataset.resolution")
    assert "W,H" in issue.fix and issue.line == 7


def test_alpha_above_dim_is_a_warning(tmp_path: Path) -> None:
    valid_setup(tmp_path)
    cfg = load_config(write(tmp_path, BASE + "[network]\nnetwork_dim = 8\nnetwork_alpha = 16\n"))
    issue = only(check_config(cfg, text=(tmp_path / "train.toml").read_text(), path=tmp_path / "train.toml"),
                 "network.network_alpha")
    assert issue.severity == "warning" and issue.line == 10 and "2x" in issue.message


def test_warmup_without_warmup_scheduler_is_a_warning(tmp_path: Path) -> None:
    cfg = preset("anime-character", optimizer={"lr_scheduler": "constant", "lr_warmup_steps": 50})
    issue = only(check_config(cfg, files=False), "optimizer.lr_warmup_steps")
    assert issue.severity == "warning" and "constant_with_warmup" in issue.fix
    fine = preset("anime-character", optimizer={"lr_scheduler": "constant_with_warmup"})
    assert not [i for i in check_config(fine, files=False) if i.key == "optimizer.lr_warmup_steps"]


def test_text_encoder_only_with_unet_only_is_an_error(tmp_path: Path) -> None:
    valid_setup(tmp_path)
    issues = issues_of(tmp_path, BASE + "[network]\ntrain_unet_only = true\ntrain_text_encoder_only = true\n")
    issue = only(issues, "network.train_text_encoder_only")
    assert issue.severity == "error" and issue.line == 10 and "at most one" in issue.fix


def test_missing_paths_are_errors_naming_the_resolved_path(tmp_path: Path) -> None:
    issues = issues_of(tmp_path, BASE + "[network]\nnetwork_weights = \"old.safetensors\"\n")
    model = only(issues, "model.pretrained_model")
    assert model.value == tmp_path / "model" and model.line == 3 and "does not exist" in model.message
    assert only(issues, "dataset.train_data_dir").line == 6
    assert only(issues, "network.network_weights").line == 9


def test_required_paths_unset(tmp_path: Path) -> None:
    issues = issues_of(tmp_path, "[training]\nseed = 1\n")
    assert only(issues, "model.pretrained_model").code == "required"
    assert only(issues, "dataset.train_data_dir").code == "required"


def test_dataset_without_usable_folders(tmp_path: Path) -> None:
    make_model(tmp_path / "model")
    make_images(tmp_path / "data" / "kazari", [(64, 64)])  # no N_ prefix: sd-scripts ignores it
    issue = only(issues_of(tmp_path, BASE), "dataset.train_data_dir")
    assert issue.code == "no-images" and "10_mychar" in issue.fix and issue.line == 6
    assert "repeat count" in issue.message


def test_empty_reg_folder_is_an_error(tmp_path: Path) -> None:
    valid_setup(tmp_path)
    (tmp_path / "reg").mkdir()
    issue = only(issues_of(tmp_path, BASE + 'reg_data_dir = "reg"\n'), "dataset.reg_data_dir")
    assert issue.code == "no-images"


def test_ckpt_save_format_warns_safetensors_is_preferred(tmp_path: Path) -> None:
    valid_setup(tmp_path)
    path = write(tmp_path, BASE + "[output]\nsave_model_as = \"ckpt\"\n")
    cfg = load_config(path)  # a warning does not block
    issue = only(check_config(cfg, text=path.read_text(), path=path), "output.save_model_as")
    assert issue.severity == "warning" and "safetensors" in issue.fix and issue.line == 9


def test_bucket_range_must_contain_the_resolution(tmp_path: Path) -> None:
    cfg = preset("anime-character", dataset={"min_bucket_reso": 1024, "max_bucket_reso": 512})
    keys = {i.key for i in check_config(cfg, files=False) if i.severity == "error"}
    assert {"dataset.min_bucket_reso", "dataset.max_bucket_reso"} <= keys


def test_bucket_range_is_checked_with_no_upscale_too(tmp_path: Path) -> None:
    # sd-scripts refuses max_bucket_reso below the resolution whether or not bucket_no_upscale is set.
    cfg = preset("anime-character", dataset={"bucket_no_upscale": True, "max_bucket_reso": 512,
                                             "resolution": "768,768"})
    assert "dataset.max_bucket_reso" in {i.key for i in check_config(cfg) if i.severity == "error"}


def test_toml_syntax_error_reports_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "[network\nnetwork_dim = 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    issue = info.value.issues[0]
    assert issue.code == "syntax" and issue.line == 8
    assert "train.toml:8" in str(info.value)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_error_message_is_one_paragraph_listing_all_errors(tmp_path: Path) -> None:
    valid_setup(tmp_path)
    path = write(tmp_path, BASE + "shufle_caption = true\nkeep_tokens = -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith("2 problems")
    assert "shufle_caption" in text and "keep_tokens" in text


def test_parse_without_files_gives_issue_objects() -> None:
    cfg, issues = parse_config_text("[network]\nnetwork_dim = 0\n")
    assert cfg is None and issues[0].key == "network.network_dim" and issues[0].line == 2
    assert issues[0].to_json()["line"] == 2


def test_lines_are_right_after_multiline_arrays_with_brackets_in_strings() -> None:
    text = (
        "[sample]\n"
        "sample_prompts = [\n"
        '  "kazari, [smile] # not a comment --w 512",\n'
        '  "kazari ]] sitting",\n'
        "]\n"
        "sample_every_n_epochs = -1\n"
    )
    cfg, issues = parse_config_text(text)
    assert cfg is None and [(i.key, i.line) for i in issues] == [("sample.sample_every_n_epochs", 6)]


def test_sd_scripts_spellings_point_to_kazari_keys() -> None:
    text = ('[model]\npretrained_model_name_or_path = "m"\n[training]\nxformers = true\n'
            '[network]\nnetwork_train_unet_only = true\n')
    _, issues = parse_config_text(text)
    fixes = {i.key: i.fix for i in issues}
    assert fixes["model.pretrained_model_name_or_path"] == "did you mean pretrained_model?"
    assert "attention" in fixes["training.xformers"]
    assert "train_unet_only" in fixes["network.network_train_unet_only"]


def test_unknown_key_does_not_hide_the_other_mistakes(tmp_path: Path) -> None:
    # sd-scripts users fix one round of messages at a time; all of them must come in the first round.
    valid_setup(tmp_path)
    text = BASE.replace('"512,512"', '"520,512"') + "keep_token = 1\n"
    issues = issues_of(tmp_path, text)
    assert "keep_tokens" in only(issues, "dataset.keep_token").fix
    assert only(issues, "dataset.resolution").line == 7


def test_train_data_dir_pointing_at_an_n_name_folder_warns(tmp_path: Path) -> None:
    valid_setup(tmp_path)
    text = BASE.replace('train_data_dir = "data"', 'train_data_dir = "data/10_kazari"')
    cfg = load_config(write(tmp_path, text))  # a warning, not an error: plain folders are allowed
    found = check_config(cfg, text=text)
    issue = only(found, "dataset.train_data_dir")
    assert issue.severity == "warning" and "1 repeat" in issue.message and issue.line == 6


def test_loader_worker_keys_are_visibly_ignored() -> None:
    cfg = preset("anime-character", dataset={"max_data_loader_n_workers": 2})
    issues = [i for i in check_config(cfg, files=False) if i.key == "dataset.max_data_loader_n_workers"]
    assert [i.severity for i in issues] == ["warning"] and "ignored" in issues[0].message
    assert not [i for i in check_config(preset("low-vram"), files=False) if i.code == "ignored"]


def test_every_kind_of_mistake_is_reported_in_one_pass(tmp_path):
    # A wrong type used to stop the check there: the resolution and the missing model were only
    # reported after the user fixed it (one round per kind of mistake).
    make_images(tmp_path / "data" / "10_kazari", [(64, 64)])
    cfg = tmp_path / "c.toml"
    cfg.write_text('[dataset]\ntrain_data_dir = "data"\nresolution = "700,700"\n'
                   '[network]\nnetwork_dim = "abc"\n'
                   '[training]\nlearning_rat = 1e-4\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    keys = {i.key for i in err.value.issues}
    assert {"training.learning_rat", "network.network_dim", "dataset.resolution", "model.pretrained_model"} <= keys
    # the defaulted network_dim is not judged again by the consistency checks
    assert [i.key for i in err.value.issues].count("network.network_dim") == 1

    from trainer.config import ConfigDocument

    assert {i.key for i in ConfigDocument.load(cfg).issues()} == keys


@pytest.mark.parametrize("wrong, section, expected", [
    ("training.learning_rat", "training", "optimizer.learning_rate"),  # was min_snr_gamma
    ("optimizer.learning_rat", "optimizer", "optimizer.learning_rate"),
    ("dataset.resolutoin", "dataset", "dataset.resolution"),
    ("training.mixed_precison", "training", "training.mixed_precision"),
    ("training.zzzz", "training", None),  # nothing is close: no made-up suggestion
])
def test_unknown_key_suggestion_by_edit_distance_own_section_first(wrong, section, expected):
    from trainer.config.schema import suggest_key

    assert suggest_key(wrong, section) == expected

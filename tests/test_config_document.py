"""ConfigDocument: edits keep comments and key order, are validated, and never clobber other edits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tagging.errors import ConflictError
from trainer.config import ConfigDocument, ConfigError, preset

TEXT = """\
# My character LoRA — tuned by hand
[optimizer]
# slower than default on purpose
learning_rate = 5e-5   # keep low
lr_scheduler = "cosine_with_restarts"

[dataset]
resolution = "512,512"
keep_tokens = 1
"""


@pytest.fixture
def cfg_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(TEXT)
    return path


def test_set_keeps_comments_order_and_trailing_comment(cfg_file: Path) -> None:
    doc = ConfigDocument.load(cfg_file)
    doc.set("optimizer.learning_rate", 1e-4)
    doc.set("training.seed", 42)  # a new section is appended
    doc.set("dataset.flip_aug", True)  # a new key in an existing section
    assert doc.save() is True
    text = cfg_file.read_text()
    assert text.startswith("# My character LoRA — tuned by hand\n[optimizer]\n# slower than default on purpose\n")
    assert "learning_rate = 0.0001   # keep low\n" in text
    assert text.index("learning_rate") < text.index("lr_scheduler") < text.index("resolution")
    assert text.index("keep_tokens") < text.index("flip_aug") < text.index("[training]")
    assert ConfigDocument.load(cfg_file).config.training.seed == 42


def test_only_the_edited_line_changes(cfg_file: Path) -> None:
    doc = ConfigDocument.load(cfg_file)
    doc.set("dataset.keep_tokens", 2)
    doc.save()
    before, after = TEXT.splitlines(), cfg_file.read_text().splitlines()
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == [8]


def test_invalid_set_raises_naming_key_and_leaves_document_unchanged(cfg_file: Path) -> None:
    doc = ConfigDocument.load(cfg_file)
    with pytest.raises(ConfigError) as info:
        doc.set("optimizer.lr_scheduler", "cosine_restart")
    issue = info.value.issues[0]
    assert issue.key == "optimizer.lr_scheduler" and issue.line == 5
    assert "cosine_with_restarts" in issue.fix
    with pytest.raises(ConfigError, match="network.network_dim"):
        doc.set("network.network_dim", 0)
    with pytest.raises(KeyError):
        doc.set("network.dim", 4)
    assert doc.text == TEXT and not doc.dirty
    assert doc.save() is False  # nothing to write
    assert cfg_file.read_text() == TEXT


def test_set_text_parses_form_input(cfg_file: Path) -> None:
    doc = ConfigDocument.load(cfg_file)
    doc.set_text("network.network_dim", "32")
    doc.set_text("network.network_alpha", "16")
    doc.set_text("dataset.flip_aug", "yes")
    doc.set_text("optimizer.optimizer_type", "adamw")
    doc.set_text("dataset.resolution", "640x768")
    doc.set_text("optimizer.optimizer_args", "{ weight_decay = 0.01 }")
    doc.set_text("sample.sample_prompts", "kazari, smile --w 512\nkazari, sitting")
    cfg = doc.config
    assert (cfg.network.network_dim, cfg.network.network_alpha) == (32, 16.0)
    assert cfg.dataset.flip_aug and cfg.optimizer.optimizer_type == "AdamW"
    assert cfg.dataset.resolution == "640,768"
    assert cfg.optimizer.optimizer_args == {"weight_decay": 0.01}
    assert cfg.sample.sample_prompts == ["kazari, smile --w 512", "kazari, sitting"]
    with pytest.raises(ConfigError, match="network.network_dim"):
        doc.set_text("network.network_dim", "lots")
    doc.set_text("training.seed", "")  # optional: empty unsets
    assert doc.get("training.seed") == 1337 and not doc.has("training.seed")


def test_get_returns_file_value_or_default(cfg_file: Path) -> None:
    doc = ConfigDocument.load(cfg_file)
    assert doc.get("optimizer.learning_rate") == 5e-5 and doc.has("optimizer.learning_rate")
    assert doc.get("network.network_dim") == 64 and not doc.has("network.network_dim")
    doc.set("network.network_dim", 8)
    doc.unset("network.network_dim")
    assert doc.get("network.network_dim") == 64


def test_refuses_to_overwrite_a_file_changed_on_disk(cfg_file: Path) -> None:
    doc = ConfigDocument.load(cfg_file)
    doc.set("dataset.keep_tokens", 3)
    cfg_file.write_text(TEXT.replace("keep_tokens = 1", "keep_tokens = 5  # edited in vim"))
    assert doc.changed_on_disk()
    with pytest.raises(ConflictError, match="changed on disk"):
        doc.save()
    assert "edited in vim" in cfg_file.read_text()  # untouched
    doc.save(force=True)
    assert "keep_tokens = 3" in cfg_file.read_text()
    # after a save the document tracks the new content: a further save is fine
    doc.set("dataset.keep_tokens", 4)
    doc.save()


def test_reload_picks_up_the_other_edit(cfg_file: Path) -> None:
    doc = ConfigDocument.load(cfg_file)
    cfg_file.write_text(TEXT.replace("keep_tokens = 1", "keep_tokens = 5"))
    doc.reload()
    assert doc.get("dataset.keep_tokens") == 5 and not doc.changed_on_disk()


def test_new_document_fills_placeholders_and_refuses_a_file_that_appeared(tmp_path: Path) -> None:
    path = tmp_path / "new.toml"
    doc = ConfigDocument.new(path, preset("quick-test"), header="fresh")
    doc.set("model.pretrained_model", "models/tiny")
    text = doc.text
    assert 'pretrained_model = "models/tiny"' in text and "# pretrained_model =" not in text
    # the key sits where its help comment is, inside [model]
    assert text.index("[model]") < text.index('pretrained_model = "models/tiny"') < text.index("[dataset]")
    path.write_text("# someone else\n")
    with pytest.raises(ConflictError):
        doc.save()
    os.unlink(path)
    assert doc.save() is True
    assert ConfigDocument.load(path).config.model.pretrained_model == Path("models/tiny")


def test_issues_include_schema_and_file_checks(cfg_file: Path) -> None:
    doc = ConfigDocument.load(cfg_file)
    keys = {i.key for i in doc.issues()}
    assert {"model.pretrained_model", "dataset.train_data_dir"} <= keys
    cfg_file.write_text(TEXT + "bogus = 1\n")
    doc = ConfigDocument.load(cfg_file)
    # A typo must not hide the other mistakes: the unknown key comes first, the file checks still run.
    assert [i.key for i in doc.issues()][:3] == ["dataset.bogus", "model.pretrained_model", "dataset.train_data_dir"]
    assert [i.key for i in doc.issues(check=False)] == ["dataset.bogus"]
    with pytest.raises(ConfigError):
        doc.config  # noqa: B018


def test_resolved_config_uses_file_folder(cfg_file: Path) -> None:
    doc = ConfigDocument.load(cfg_file)
    doc.set("dataset.train_data_dir", "data")
    assert doc.resolved_config().dataset.train_data_dir == cfg_file.parent.resolve() / "data"
    assert doc.config.dataset.train_data_dir == Path("data")

"""Model resolution (folder, file, short name, HF cache, offline) and the `kazari tag` CLI."""

from __future__ import annotations

import json
import shutil

import pytest

from tagging.errors import UserError
from tagging.synthetic import make_character_dataset
from tagging.tagger import models, tiny
from tagging.tagger.models import KNOWN_MODELS, resolve_model
from tui.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny.build_tiny_tagger(tmp_path_factory.mktemp("tiny"), size=48)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to download fails loudly; the code must not need the network here."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "_hf_offline", lambda: True)


@pytest.fixture
def root(tmp_path):
    return make_character_dataset(tmp_path / "ds", n_images=5, size=64)


# ---- resolution -------------------------------------------------------------------------------

def test_short_names_cover_v3_and_v2_families():
    assert KNOWN_MODELS["wd-swinv2-v3"] == "SmilingWolf/wd-swinv2-tagger-v3"
    for name in ("wd-convnext-v3", "wd-vit-v3", "wd-vit-large-v3", "wd-eva02-large-v3",
                 "wd-moat-v2", "wd-convnext-v2", "wd-swinv2-v2"):
        assert KNOWN_MODELS[name].startswith("SmilingWolf/")


def test_folder_and_file_resolve_with_content_fingerprint(model, tmp_path):
    a = resolve_model(model)
    b = resolve_model(model / "model.onnx")
    assert a.model_path == b.model_path and a.labels_path.name == "selected_tags.csv"
    copy = shutil.copytree(model, tmp_path / "copy")
    assert resolve_model(copy).model_id.split("-")[-1] == a.model_id.split("-")[-1]  # same content
    other = tiny.build_tiny_tagger(tmp_path / "other", size=32)
    assert resolve_model(other).model_id.split("-")[-1] != a.model_id.split("-")[-1]


def test_offline_not_cached_says_what_to_download(tmp_path):
    with pytest.raises(UserError) as err:
        resolve_model("wd-swinv2-v3", cache_dir=tmp_path / "hf")
    text = str(err.value)
    assert "SmilingWolf/wd-swinv2-tagger-v3" in text and "--model" in text and "selected_tags.csv" in text


def test_cached_hub_model_resolves_offline(model, tmp_path):
    # The huggingface_hub cache layout: models--owner--name/{refs/main, snapshots/<commit>/...}
    repo = tmp_path / "hf" / "models--SmilingWolf--wd-vit-tagger-v3"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("model.onnx", "selected_tags.csv"):
        shutil.copy(model / name, snap / name)
    files = resolve_model("wd-vit-v3", cache_dir=tmp_path / "hf")
    assert files.model_path.parent.name == commit
    assert files.model_id.startswith("SmilingWolf_wd-vit-tagger-v3-0123456789ab")


def test_unknown_name_lists_short_names():
    with pytest.raises(UserError, match="wd-swinv2-v3"):
        resolve_model("no-such-tagger")


# ---- CLI ------------------------------------------------------------------------------------------

def _captions(root):
    return {p.name: p.read_text() for p in sorted(root.glob("*/*.txt"))}


def test_cli_dry_run_json(root, model, capsys):
    before = _captions(root)
    code = main(["tag", str(root), "--model", str(model), "--dry-run", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dry_run"] is True and doc["counts"]["tagged"] == 5 and doc["input_size"] == 48
    assert doc["characters"] == [{"tag": "uiharu_kazari", "images": 5}]
    assert "pink_hair" in doc["images"][0]["tags"]
    assert _captions(root) == before


def test_cli_writes_with_options(root, model, capsys):
    code = main(["tag", str(root), "--model", str(model), "--exclude", "solo,long_hair", "1girl",
                 "--spaces", "--character", "1.5", "--max-tags", "3", "--batch", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Changed 5 of 5" in out
    for text in _captions(root).values():
        tags = text.strip().split(", ")
        if tags[0] == "kazari":  # the folder's trigger is kept first (character profile default)
            tags = tags[1:]
        assert "pink hair" in tags and len(tags) <= 3
        assert not {"solo", "long hair", "1girl", "uiharu kazari", "kazari"} & set(tags)


def test_cli_honours_the_character_profile(root, model, capsys):
    """`kazari dataset character` records the profile; `kazari tag` then never writes its
    features or the recognised character tag, offers it instead, and --ignore-character writes all."""
    assert main(["dataset", "edit", str(root), "--remove", "pink_hair", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["features_recorded"] == ["pink_hair"]  # a suggested feature
    assert main(["dataset", "character", str(root), "--trigger", "kz", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["written"] and data["trigger"] == "kz" and data["features"] == ["pink_hair"]
    assert main(["tag", str(root), "--model", str(model), "--mode", "append", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["character_profile"]["offered"] == [{"tag": "uiharu_kazari", "images": 5}]
    for text in _captions(root).values():
        tags = text.strip().split(", ")
        assert tags[0] == "kz" and "pink_hair" not in tags and "uiharu_kazari" not in tags
    assert main(["tag", str(root), "--model", str(model), "--mode", "append"]) == 0
    out = capsys.readouterr().out
    assert "NOT written" in out and "--never uiharu_kazari" in out
    assert main(["dataset", "character", str(root), "--never", "uiharu_kazari", "--remove-feature", "pink_hair"]) == 0
    assert "never add: uiharu_kazari" in capsys.readouterr().out
    assert main(["tag", str(root), "--model", str(model), "--mode", "append", "--ignore-character"]) == 0
    capsys.readouterr()
    assert all("uiharu_kazari" in t and "pink_hair" in t for t in _captions(root).values())


def test_cli_skip_mode(root, model, capsys):
    (root / "10_kazari" / "0002.txt").write_text("")
    before = _captions(root)
    assert main(["tag", str(root), "--model", str(model), "--mode", "skip", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"]["skipped"] == 4 and doc["counts"]["changed"] == 1
    after = _captions(root)
    assert [n for n in before if before[n] != after[n]] == ["0002.txt"]


def test_cli_bad_model_exits_2_with_one_paragraph(root, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["tag", str(root), "--model", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no model.onnx" in err and "Traceback" not in err


def test_cli_rejects_negative_threshold(root, model):
    with pytest.raises(SystemExit):
        main(["tag", str(root), "--model", str(model), "--general", "-1"])


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_cli_rejects_non_finite_threshold(root, model, value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tag", str(root), "--model", str(model), "--general", value])
    assert exc.value.code == 2 and "not a finite number" in capsys.readouterr().err


def test_ctrl_c_sets_cancel_first_then_aborts():
    import os
    import signal
    import threading

    from tui.commands.tag_cmd import _cancel_on_sigint

    cancel = threading.Event()
    with _cancel_on_sigint(cancel, quiet=True):
        os.kill(os.getpid(), signal.SIGINT)
        assert cancel.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

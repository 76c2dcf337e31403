"""kazari fetch against a fake booru on 127.0.0.1: filters, faults, pacing, captions, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tagging.dataset import Dataset
from tagging.gather.fakesite import FakeBooru, make_post, near_copy_png, noise_png
from tagging.gather.fetch import FetchOptions, fetch
from tagging.gather.http import HttpOptions
from tagging.gather.sources import read_sources

REPO = Path(__file__).resolve().parents[1]
FAST = HttpOptions(interval=0.1, retries=2, backoff=0.01, timeout=10)


def sample_site(flavour: str = "danbooru") -> FakeBooru:
    a, b, c, d = (noise_png(s) for s in (1, 2, 3, 4))
    posts = [
        make_post(110, a),
        make_post(109, noise_png(9), file_url=None, large_file_url=None),  # restricted: no file_url
        make_post(108, noise_png(8), is_deleted=True),
        make_post(107, b, general="1girl solo smile"),
        make_post(106, a),  # the same file posted twice (same md5)
        make_post(105, near_copy_png(b)),  # a re-encoded copy of 107
        make_post(104, noise_png(14)),  # served truncated
        make_post(103, noise_png(13), meta="monochrome"),
        make_post(102, c, rating="s"),
        make_post(101, noise_png(11), rating="e"),
        make_post(100, d),
    ]
    for p in posts:
        if p.get("file_url") is None:
            p.pop("file_url")  # the real API leaves the field out
    images = {f"/data/{p['id']}.png": data for p, data in zip(
        posts, [a, noise_png(9), noise_png(8), b, a, near_copy_png(b), noise_png(14), noise_png(13), c,
                noise_png(11), d], strict=True)}
    path = "/posts.json" if flavour == "danbooru" else "/index.php"
    return FakeBooru(posts, images, flavour=flavour, fail_first={path: [429]}, truncate={"/data/104.png"})


def options(base: str, **kw) -> FetchOptions:
    base_kw = dict(tags=("uiharu_kazari",), base_url=base, limit=10, ratings=frozenset({"g", "s"}),
                   exclude=("monochrome",), per_page=3)
    base_kw.update(kw)
    return FetchOptions(**base_kw)


def test_fetch_danbooru_filters_faults_captions_and_sources(tmp_path):
    into = tmp_path / "ds" / "2_kazari"
    with sample_site() as site:
        report = fetch(options(site.base_url), into, http=FAST)
        log = list(site.log)
    assert sorted(p.name for p in into.iterdir()) == sorted(
        [f"danbooru_{i}.{e}" for i in (110, 107, 102, 100) for e in ("png", "txt")])
    assert [a.post_id for a in report.saved] == [110, 107, 102, 100]
    skipped = dict(report.skipped)
    assert "file_url" in skipped[109] and "deleted" in skipped[108]
    assert "monochrome" in skipped[103] and "rating e" in skipped[101]
    assert dict(report.duplicates) == {106: "2_kazari/danbooru_110.png", 105: "2_kazari/danbooru_107.png"}
    assert [i for i, _ in report.failed] == [104]
    # Captions: the folder's trigger first, then character and general tags, underscores kept.
    assert (into / "danbooru_110.txt").read_text() == "kazari, uiharu_kazari, 1girl, solo, hair_flower, smile\n"
    assert (into / "danbooru_107.txt").read_text() == "kazari, uiharu_kazari, 1girl, solo, smile\n"
    # One undoable edit through the dataset engine.
    ds = Dataset.open(tmp_path / "ds")
    assert "fetched from danbooru" in ds.history[-1].label
    ds.undo()
    ds.save()
    assert (into / "danbooru_110.txt").read_text().strip() == ""
    records = read_sources(tmp_path / "ds")
    assert [r["post_id"] for r in records] == [110, 107, 102, 100]
    assert records[0]["page_url"].endswith("/posts/110") and records[0]["file_url"].endswith("/data/110.png")
    assert records[0]["source"] == "https://example.invalid/art/110"
    # The 429 was retried (the same first page twice), paging was keyset, and the page past the
    # end was asked for once.
    api = [r for r in log if r.path == "/posts.json"]
    assert "page" not in api[0].query and "page" not in api[1].query
    assert [r.query.get("page") for r in api[2:]] == ["b108", "b105", "b102", "b100"]
    # Pacing: no two requests started closer than the interval (arrival times at the server).
    gaps = [b.at - a.at for a, b in zip(log, log[1:], strict=False)]
    assert min(gaps) >= FAST.interval * 0.8, gaps
    assert len(log) == report.requests
    assert all(r.headers.get("User-Agent", "").startswith("kazari/") for r in log)
    # The truncated image was retried, then given up without leaving a file.
    assert len([r for r in log if r.path == "/data/104.png"]) == FAST.retries + 1
    assert not list(into.glob(".*"))


def test_danbooru_two_tag_limit_filters_the_rest_client_side(tmp_path):
    with sample_site() as site:
        site.fail_first.clear()
        report = fetch(options(site.base_url, tags=("uiharu_kazari", "solo", "hair_flower", "-smile"),
                               ratings=None, exclude=()), tmp_path / "ds" / "2_kazari", http=FAST)
        sent = [r.query["tags"] for r in site.requests_to("/posts.json")]
    assert set(sent) == {"uiharu_kazari solo"}
    # Every post has smile: all are filtered by the negated tag, none is fetched.
    assert report.saved == [] and any("excluded tag smile" in r for _, r in report.skipped)
    with sample_site() as site:
        site.fail_first.clear()
        report = fetch(options(site.base_url, tags=("uiharu_kazari", "solo", "hair_flower"), ratings=None,
                               exclude=()), tmp_path / "ds2" / "2_kazari", http=FAST)
    assert 107 not in [a.post_id for a in report.saved]  # 107 lacks hair_flower
    assert "lacks hair_flower" in dict(report.skipped)[107]


@pytest.mark.parametrize("flavour", ["gelbooru", "safebooru"])
def test_gelbooru_family_with_credentials_never_stored(tmp_path, flavour):
    env = {f"KAZARI_{flavour.upper()}_API_KEY": "sekrit-key", f"KAZARI_{flavour.upper()}_USER_ID": "4242"}
    into = tmp_path / "ds" / "3_kazari"
    with sample_site(flavour) as site:
        report = fetch(options(site.base_url, site=flavour, ratings=None), into, http=FAST, env=env)
        api = site.requests_to("/index.php")
    assert [a.post_id for a in report.saved] == [110, 107, 102, 101, 100]
    assert api[0].query["api_key"] == "sekrit-key" and [r.query["pid"] for r in api] == ["0", "0", "1", "2", "3"]
    # No categories in this API: all tags go into the caption (sorted as the site sends them).
    assert (into / f"{flavour}_110.txt").read_text().startswith("kazari, 1girl, hair_flower")
    for path in (tmp_path / "ds").rglob("*"):
        if path.is_file():
            assert b"sekrit" not in path.read_bytes(), path


def test_rerun_resumes_by_md5_and_limit_counts_existing(tmp_path):
    into = tmp_path / "ds" / "2_kazari"
    with sample_site() as site:
        first = fetch(options(site.base_url, limit=2), into, http=FAST)
        second = fetch(options(site.base_url, limit=3), into, http=FAST)
        downloads = [r.path for r in site.log if r.path.startswith("/data/")]
    assert [a.post_id for a in first.saved] == [110, 107]
    assert second.existing == [110, 107] and [a.post_id for a in second.saved] == [102]
    assert downloads.count("/data/110.png") == 1  # never downloaded twice
    assert [r["post_id"] for r in read_sources(tmp_path / "ds")] == [110, 107, 102]


def test_cancel_keeps_complete_files_and_captions(tmp_path):
    into = tmp_path / "ds" / "2_kazari"
    cancel = threading.Event()
    with sample_site() as site:
        site.fail_first.clear()
        report = fetch(options(site.base_url), into, http=FAST, cancel=cancel,
                       on_arrival=lambda a: cancel.set())
    assert report.cancelled and [a.post_id for a in report.saved] == [110]
    assert (into / "danbooru_110.txt").exists()


def test_kill_mid_download_then_resume(tmp_path):
    """SIGKILL while an image is being served: no half file; the re-run completes and captions all."""
    into = tmp_path / "ds" / "2_kazari"
    hold = threading.Event()
    with sample_site() as site:
        site.fail_first.clear()
        site.holds["/data/102.png"] = hold
        cmd = [sys.executable, "-m", "tui.cli", "fetch", "uiharu_kazari", "--base-url", site.base_url,
               "--into", str(into), "--limit", "10", "--min-side", "0", "--exclude", "monochrome",
               "--rating", "g,s", "--interval", "0.05", "--json"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not site.requests_to("/data/102.png") and time.monotonic() < deadline:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.02)
            assert site.requests_to("/data/102.png")
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        hold.set()
        names = sorted(p.name for p in into.iterdir())
        assert names == ["danbooru_107.png", "danbooru_110.png"]  # complete files only, no temp files
        report = fetch(options(site.base_url), into, http=FAST)
    assert report.existing == [110, 107] and [a.post_id for a in report.saved] == [102, 100]
    assert sorted(report.captioned) == [f"2_kazari/danbooru_{i}.png" for i in (100, 102, 107, 110)]
    assert [r["post_id"] for r in read_sources(tmp_path / "ds")] == [110, 107, 102, 100]


def test_cli_json_and_errors(tmp_path, capsys):
    from tui.cli import main

    with sample_site() as site:
        site.fail_first.clear()
        code = main(["fetch", "uiharu_kazari", "--base-url", site.base_url, "--into", str(tmp_path / "r" / "2_k"),
                     "--limit", "1", "--min-side", "0", "--interval", "0.05", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["counts"]["saved"] == 1 and out["saved"][0]["tags"][0] == "k"
    code = main(["fetch", "uiharu_kazari", "--base-url", "ftp://nowhere", "--into", str(tmp_path / "x")])
    assert code == 2 and "--base-url" in capsys.readouterr().err


def test_danbooru_basic_auth_goes_to_the_api_only(tmp_path):
    env = {"KAZARI_DANBOORU_LOGIN": "me", "KAZARI_DANBOORU_API_KEY": "sekrit-key"}
    with sample_site() as site:
        site.fail_first.clear()
        fetch(options(site.base_url, limit=1), tmp_path / "ds" / "2_kazari", http=FAST, env=env)
        api, images = site.requests_to("/posts.json"), site.requests_to("/data/")
    assert api and all(r.headers.get("Authorization", "").startswith("Basic ") for r in api)
    assert images and not any("Authorization" in r.headers for r in images)
    for path in (tmp_path / "ds").rglob("*"):
        if path.is_file():
            assert b"sekrit" not in path.read_bytes(), path


def test_tag_limit_error_is_a_clear_user_error(tmp_path):
    from tagging.gather.http import FetchError

    with sample_site() as site:
        site.fail_first.clear()
        site.tag_limit = 1  # a stricter instance than kazari's two-tag assumption
        with pytest.raises(FetchError, match="too many tags"):
            fetch(options(site.base_url, tags=("uiharu_kazari", "solo")), tmp_path / "ds" / "2_k", http=FAST)


def test_retries_exhausted_on_the_api_is_a_user_error_naming_no_secret(tmp_path):
    from tagging.gather.http import FetchError

    env = {"KAZARI_GELBOORU_API_KEY": "sekrit-key", "KAZARI_GELBOORU_USER_ID": "1"}
    with sample_site("gelbooru") as site:
        site.fail_first["/index.php"] = [503] * 10
        with pytest.raises(FetchError) as err:
            fetch(options(site.base_url, site="gelbooru"), tmp_path / "ds" / "2_k", http=FAST, env=env)
        tries = len(site.requests_to("/index.php"))
    assert "kept failing after 3 tries" in str(err.value) and "sekrit" not in str(err.value)
    assert tries == FAST.retries + 1


def test_rerun_after_reject_and_clean_downloads_neither_again(tmp_path):
    from tagging.gather.clean import CleanOptions, clean_dataset

    into = tmp_path / "ds" / "2_kazari"
    with sample_site() as site:
        site.fail_first.clear()
        fetch(options(site.base_url, limit=3), into, http=FAST)
        ds = Dataset.open(tmp_path / "ds")
        ds.trash("2_kazari/danbooru_107.png")  # rejected
        clean_dataset(ds, CleanOptions(max_side=32), keys=["2_kazari/danbooru_110.png"])  # new md5 now
        before = len(site.requests_to("/data/"))
        again = fetch(options(site.base_url, limit=3), into, http=FAST)
        downloads = [r.path for r in site.requests_to("/data/")][before:]
    assert "/data/110.png" not in downloads and "/data/107.png" not in downloads
    assert 110 in again.existing and "removed from the dataset earlier" in dict(again.skipped)[107]
    # 105 is a near-copy of the rejected 107: it stays out too.
    assert dict(again.duplicates)[105] == "2_kazari/danbooru_107.png (removed)"
    assert [a.post_id for a in again.saved] == [100]


def test_captions_follow_the_character_profile(tmp_path):
    from tagging.character import CharacterProfile, save_character

    root = tmp_path / "ds"
    root.mkdir()
    save_character(root, CharacterProfile(trigger="uiharu", features=["hair_flower"], never_add=["solo"]))
    with sample_site() as site:
        site.fail_first.clear()
        fetch(options(site.base_url, limit=1), root / "2_kazari", http=FAST)
    assert (root / "2_kazari" / "danbooru_110.txt").read_text() == "uiharu, uiharu_kazari, 1girl, smile\n"


def test_backoff_doubles_between_retries_of_a_server_error(tmp_path):
    slow = HttpOptions(interval=0.01, retries=3, backoff=0.15, timeout=10)
    with sample_site() as site:
        site.fail_first["/posts.json"] = [503, 502]
        fetch(options(site.base_url, limit=1), tmp_path / "ds" / "2_k", http=slow)
        first_page = [r for r in site.requests_to("/posts.json") if "page" not in r.query]
    assert len(first_page) == 3
    gaps = [b.at - a.at for a, b in zip(first_page, first_page[1:], strict=False)]
    assert gaps[0] >= 0.15 * 0.9 and gaps[1] >= 0.30 * 0.9, gaps


def test_gelbooru_family_post_fields():
    from tagging.gather.boorus import Danbooru, Safebooru

    site = Safebooru("http://127.0.0.1:9")
    post = site.parse({"id": 5, "hash": "ABC", "directory": "12", "image": "x.jpeg", "width": 640, "height": 480,
                       "rating": "safe", "tags": "a b", "status": "deleted"})
    assert post.file_url == "http://127.0.0.1:9/images/12/x.jpeg" and post.ext == ".jpeg"
    assert (post.md5, post.rating, post.general, post.deleted) == ("abc", "g", ("a", "b"), True)
    dan = Danbooru("http://127.0.0.1:9").parse({"id": 7, "rating": "s", "is_banned": True,
                                               "file_url": "https://cdn.example/o/7.png"})
    assert dan.deleted and dan.file_url == "https://cdn.example/o/7.png" and dan.page_url.endswith("/posts/7")


def test_credentials_from_env_else_the_user_file(tmp_path):
    from tagging.errors import UserError
    from tagging.gather.boorus import credentials

    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert credentials("danbooru", env) == (None, {})
    (tmp_path / "kazari").mkdir()
    (tmp_path / "kazari" / "credentials.toml").write_text(
        '[danbooru]\nlogin = "me"\napi_key = "k1"\n[gelbooru]\napi_key = "k2"\nuser_id = "7"\n')
    assert credentials("danbooru", env) == (("me", "k1"), {})
    assert credentials("gelbooru", env) == (None, {"api_key": "k2", "user_id": "7"})
    assert credentials("danbooru", {**env, "KAZARI_DANBOORU_LOGIN": "env", "KAZARI_DANBOORU_API_KEY": "k3"}) == (
        ("env", "k3"), {})
    (tmp_path / "kazari" / "credentials.toml").write_text("[danbooru\n")
    with pytest.raises(UserError, match="credentials.toml"):
        credentials("danbooru", env)


def test_site_failure_midway_keeps_and_captions_what_arrived(tmp_path):
    from tagging.gather.http import FetchError

    into = tmp_path / "ds" / "2_kazari"
    with sample_site() as site:
        site.fail_first.clear()
        original = site._danbooru

        def second_page_down(h, q):  # page 2 is served, every request after it fails
            if q.get("page"):
                site.fail_first["/posts.json"] = [503] * 10
            return original(h, q)

        site._danbooru = second_page_down
        with pytest.raises(FetchError) as err:
            fetch(options(site.base_url), into, http=FAST)
    assert [a.post_id for a in err.value.report.saved] == [110, 107]
    assert (into / "danbooru_107.txt").read_text().startswith("kazari, uiharu_kazari")


def test_metatags_go_to_the_server_and_are_not_checked_as_tags():
    from tagging.gather.boorus import Danbooru
    from tagging.gather.fakesite import make_post as row
    from tagging.gather.fetch import filter_reason

    post = Danbooru("http://127.0.0.1:9").parse(row(1, None, file_url="/data/1.png"))
    opts = FetchOptions(tags=("uiharu_kazari", "order:score", "-rating:e"))
    assert filter_reason(post, opts) is None
    assert Danbooru().server_tags(opts.include, opts.excluded) == ["order:score", "-rating:e"]
    assert Danbooru().server_tags(["a", "b", "c"], ["d"]) == ["a", "b"]
    from tagging.errors import UserError

    with pytest.raises(UserError, match="metatags"):
        Danbooru().server_tags(["a", "order:score", "rating:g"], ["rating:e"])


def test_a_different_file_with_the_same_name_is_never_overwritten(tmp_path):
    into = tmp_path / "ds" / "2_kazari"
    into.mkdir(parents=True)
    (into / "danbooru_110.png").write_bytes(noise_png(99))  # the user's own file under that name
    with sample_site() as site:
        site.fail_first.clear()
        report = fetch(options(site.base_url, limit=1), into, http=FAST)
    assert (into / "danbooru_110.png").read_bytes() == noise_png(99)
    assert "not overwritten" in dict(report.failed)[110] and [a.post_id for a in report.saved] == [107]

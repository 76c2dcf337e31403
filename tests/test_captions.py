from pathlib import Path

import pytest

from tagging import captions
from tagging.captions import format_caption, parse_caption, read_caption_file
from tagging.errors import DatasetError


def test_parse_tolerates_bom_crlf_spaces_empty_items_and_trailing_comma() -> None:
    text = "\ufeff 1girl ,  long   hair,, smile ,\r\n"
    assert parse_caption(text) == ["1girl", "long hair", "smile"]


def test_parse_keeps_order_duplicates_escapes_and_underscores() -> None:
    text = r"b_tag, a tag, name_\(series\), b_tag"
    tags = parse_caption(text)
    assert tags == ["b_tag", "a tag", r"name_\(series\)", "b_tag"]
    assert captions.duplicate_tags(tags) == ["b_tag"]


def test_parse_treats_lines_as_separators() -> None:
    assert parse_caption("a, b\nc\r\nd") == ["a", "b", "c", "d"]


def test_format_roundtrip() -> None:
    tags = ["kazari", "1girl", r"\(x\)"]
    assert format_caption(tags) == r"kazari, 1girl, \(x\)"
    assert parse_caption(format_caption(tags)) == tags


def test_underscore_conversion_keeps_kaomoji() -> None:
    assert captions.underscores_to_spaces("long_hair") == "long hair"
    assert captions.underscores_to_spaces("^_^") == "^_^"
    assert captions.underscores_to_spaces("||_||") == "||_||"
    assert captions.spaces_to_underscores("long hair") == "long_hair"


def test_escape_and_unescape_parens_are_idempotent() -> None:
    assert captions.escape_parens("name_(series)") == r"name_\(series\)"
    assert captions.escape_parens(r"name_\(series\)") == r"name_\(series\)"
    assert captions.unescape_parens(r"name_\(series\)") == "name_(series)"
    assert captions.unescape_parens("name_(series)") == "name_(series)"


def test_read_caption_file_ok_and_errors(tmp_path: Path) -> None:
    ok = tmp_path / "日本語 フォルダ" / "a.txt"
    ok.parent.mkdir()
    ok.write_bytes(b"\xef\xbb\xbfa, b ,\r\n")
    assert read_caption_file(ok) == ["a", "b"]

    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café, x".encode("latin-1"))
    with pytest.raises(DatasetError, match="latin1.txt.*UTF-8"):
        read_caption_file(bad)

    junk = tmp_path / "junk.txt"
    junk.write_bytes(b"\x00\x01\x02PNG")
    with pytest.raises(DatasetError, match="junk.txt"):
        read_caption_file(junk)

    with pytest.raises(DatasetError, match="missing.txt"):
        read_caption_file(tmp_path / "missing.txt")


def test_large_caption_parses(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text(", ".join(f"tag{i}" for i in range(150_000)), encoding="utf-8")  # ~1 MB
    assert big.stat().st_size > 1_000_000
    tags = read_caption_file(big)
    assert len(tags) == 150_000 and tags[-1] == "tag149999"

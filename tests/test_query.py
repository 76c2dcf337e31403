import pytest

from tagging.query import QueryError, compile_query, filter_keys


@pytest.mark.parametrize(
    ("query", "tags", "expected"),
    [
        ("1girl AND (smile OR grin) AND NOT hat*", ["1girl", "smile"], True),
        ("1girl AND (smile OR grin) AND NOT hat*", ["1girl", "grin", "hat_ribbon"], False),
        ("1girl AND (smile OR grin) AND NOT hat*", ["1girl", "frown"], False),
        ("smile OR grin AND hat", ["smile"], True),  # AND binds tighter than OR
        ("NOT NOT smile", ["smile"], True),
        ("long hair AND smile", ["long_hair", "smile"], True),  # spaces == underscores
        ("Long_Hair", ["long hair"], True),  # case-insensitive
        ("*_background", ["white_background"], True),
        ("h?t", ["hat"], True),
        ("h?t", ["heart"], False),
        ("name_(series) AND x", ["name_(series)", "x"], True),  # parens inside a tag belong to it
        ('"a (b)" OR z', ["a (b)"], True),
        ("((a OR b)) AND c", ["b", "c"], True),
        ("and_tag", ["and_tag"], True),
        ("", ["anything"], True),
    ],
)
def test_queries(query: str, tags: list[str], expected: bool) -> None:
    assert compile_query(query)(tags) is expected


@pytest.mark.parametrize("query", ["a AND", "(a", "a)", "OR a", "NOT", 'a "b'])
def test_bad_queries_raise_user_errors_naming_the_query(query: str) -> None:
    with pytest.raises(QueryError, match="Tag query"):
        compile_query(query)


def test_filter_keys() -> None:
    class Item:
        def __init__(self, key: str, tags: list[str]) -> None:
            self.key, self.tags = key, tags

    items = [Item("a", ["1girl", "hat"]), Item("b", ["1girl"]), Item("c", ["1boy"])]
    assert filter_keys(items, "1girl AND NOT hat") == ["b"]

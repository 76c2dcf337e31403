"""Tag queries: ``1girl AND (smile OR grin) AND NOT hat*`` -> a predicate over a tag list.

Syntax: ``AND``, ``OR``, ``NOT`` (any case) and parentheses; ``NOT`` binds tightest, then
``AND``, then ``OR``. A term is every word between operators, so space-style tags work
unquoted (``long hair AND smile``); quote a term (``"a (b)"``) if it contains an operator word
or parenthesis. ``*`` and ``?`` are wildcards. Matching ignores case and treats ``_`` and a
space as the same, so ``long_hair`` finds ``long hair`` too. A parenthesis inside a word
(``name_(series)``) belongs to the tag.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tagging.errors import UserError

Predicate = Callable[[Sequence[str]], bool]
_OPERATORS = {"AND", "OR", "NOT"}
# Parentheses and NOTs nest by recursion (parsing and matching): a limit keeps a pathological
# query a clear error instead of a RecursionError. Real queries nest two or three levels.
MAX_NESTING = 64


class QueryError(UserError):
    """A tag query that cannot be parsed."""


def fold(tag: str) -> str:
    """The form used for matching: lower case, underscores as spaces, single spaces."""
    return " ".join(tag.lower().replace("_", " ").split())


@dataclass(frozen=True)
class _Tok:
    kind: str  # "(" ")" "AND" "OR" "NOT" "TERM"
    text: str = ""


def _tokenize(query: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    words: list[str] = []

    def flush() -> None:
        if words:
            tokens.append(_Tok("TERM", " ".join(words)))
            words.clear()

    pos = 0
    for match in re.finditer(r'"([^"]*)"|(\S+)', query):
        if match.start() < pos:
            continue
        if match.group(1) is not None:
            flush()
            tokens.append(_Tok("TERM", match.group(1)))
            continue
        word = match.group(2)
        if '"' in word:
            raise QueryError(f"Tag query {query!r}: unbalanced quote; close the quoted tag with a second \".")
        while word.startswith("("):
            flush()
            tokens.append(_Tok("("))
            word = word[1:]
        closing = 0
        # Trailing ")" beyond those opened inside the word close groups.
        while word.endswith(")") and word.count(")") > word.count("("):
            word = word[:-1]
            closing += 1
        if word:
            if word.upper() in _OPERATORS:
                flush()
                tokens.append(_Tok(word.upper()))
            else:
                words.append(word)
        if closing:
            flush()
            tokens.extend(_Tok(")") for _ in range(closing))
    flush()
    return tokens


def compile_query(query: str) -> Predicate:
    """Compile ``query``; raises QueryError (a UserError) naming the problem. Empty matches all."""
    tokens = _tokenize(query)
    if not tokens:
        return lambda tags: True
    pos = 0
    depth = 0

    def peek() -> str | None:
        return tokens[pos].kind if pos < len(tokens) else None

    def fail(what: str) -> QueryError:
        return QueryError(
            f"Tag query {query!r}: {what}. Use e.g. '1girl AND (smile OR grin) AND NOT hat*'."
        )

    def parse_or() -> Callable[[set[str], list[str]], bool]:
        nonlocal pos
        parts = [parse_and()]
        while peek() == "OR":
            pos += 1
            parts.append(parse_and())
        return parts[0] if len(parts) == 1 else (lambda s, seq: any(p(s, seq) for p in parts))

    def parse_and() -> Callable[[set[str], list[str]], bool]:
        nonlocal pos
        parts = [parse_not()]
        while peek() == "AND":
            pos += 1
            parts.append(parse_not())
        return parts[0] if len(parts) == 1 else (lambda s, seq: all(p(s, seq) for p in parts))

    def deeper() -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_NESTING:
            raise QueryError(
                f"Tag query {query[:80]!r}{'...' if len(query) > 80 else ''} nests parentheses or NOTs more "
                f"than {MAX_NESTING} levels deep. Write it flatter, e.g. 'a AND b AND NOT c'."
            )

    def parse_not() -> Callable[[set[str], list[str]], bool]:
        nonlocal pos, depth
        if peek() == "NOT":
            pos += 1
            deeper()
            inner = parse_not()
            depth -= 1
            return lambda s, seq: not inner(s, seq)
        return parse_atom()

    def parse_atom() -> Callable[[set[str], list[str]], bool]:
        nonlocal pos, depth
        kind = peek()
        if kind == "(":
            pos += 1
            deeper()
            inner = parse_or()
            depth -= 1
            if peek() != ")":
                raise fail("missing ')'")
            pos += 1
            return inner
        if kind == "TERM":
            text = fold(tokens[pos].text)
            pos += 1
            if any(c in text for c in "*?["):
                regex = re.compile(fnmatch.translate(text))
                return lambda s, seq: any(regex.match(t) for t in seq)
            return lambda s, seq: text in s
        if kind is None:
            raise fail("it ends where a tag was expected")
        raise fail(f"unexpected {kind!r} where a tag was expected")

    expr = parse_or()
    if pos != len(tokens):
        raise fail(f"unexpected {tokens[pos].kind if tokens[pos].kind != 'TERM' else tokens[pos].text!r}")

    def predicate(tags: Sequence[str]) -> bool:
        folded = [fold(t) for t in tags]
        return expr(set(folded), folded)

    return predicate


class Tagged(Protocol):
    """Anything with a key and a tag list, such as a dataset's ``ImageItem``."""

    @property
    def key(self) -> str: ...

    @property
    def tags(self) -> Sequence[str]: ...


def filter_keys(items: Iterable[Tagged], query: str) -> list[str]:
    """Keys of the items matching ``query``."""
    pred = compile_query(query)
    return [item.key for item in items if pred(item.tags)]

"""Booru site adapters: search parameters, paging and the post fields kazari uses.

Danbooru (Danbooru 2 API, ``/posts.json``): at most two search tags for anonymous and basic
accounts (HTTP 422 beyond), so only the first two positive tags go to the server and every
other condition is checked here; keyset paging with ``page=b<lowest id seen>``; posts may lack
``file_url`` (restricted) or be deleted/banned.

Gelbooru and Safebooru (Gelbooru 0.2 ``index.php?page=dapi&s=post&q=index&json=1``): ``pid``
page index; Gelbooru wraps posts in ``{"@attributes": ..., "post": [...]}``, Safebooru returns a
bare list (``hash`` instead of ``md5``); tags come as one string without categories.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from tagging.errors import UserError
from tagging.gather.http import Client

SITES = ("danbooru", "gelbooru", "safebooru")
DEFAULT_BASE = {
    "danbooru": "https://danbooru.donmai.us",
    "gelbooru": "https://gelbooru.com",
    "safebooru": "https://safebooru.org",
}
PAGE_LIMIT = {"danbooru": 200, "gelbooru": 100, "safebooru": 100}
DANBOORU_SERVER_TAGS = 2
# Gelbooru-family ratings are words; Danbooru's single letters are the common language.
RATING_WORDS = {"general": "g", "safe": "g", "sensitive": "s", "questionable": "q", "explicit": "e"}
RATINGS = ("g", "s", "q", "e")


@dataclass(frozen=True)
class Post:
    """One post, reduced to what fetching and attribution need."""

    site: str
    id: int
    md5: str
    file_url: str | None
    width: int
    height: int
    rating: str  # g / s / q / e ("" when unknown)
    general: tuple[str, ...] = ()
    character: tuple[str, ...] = ()
    copyright: tuple[str, ...] = ()
    meta: tuple[str, ...] = ()
    artist: tuple[str, ...] = ()
    deleted: bool = False
    source: str = ""
    page_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def tags(self) -> frozenset[str]:
        return frozenset((*self.general, *self.character, *self.copyright, *self.meta, *self.artist))

    @property
    def ext(self) -> str:
        """File extension from the file URL (".jpg"), lower case; "" without a URL."""
        if not self.file_url:
            return ""
        return os.path.splitext(urlsplit(self.file_url).path)[1].lower()


def _split(value: Any) -> tuple[str, ...]:
    return tuple(str(value or "").split())


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class Site:
    """Base: ``posts(client, tags)`` yields every post of the search, page by page."""

    name = ""

    def __init__(self, base_url: str | None = None, per_page: int | None = None) -> None:
        base = (base_url or DEFAULT_BASE[self.name]).rstrip("/")
        if not urlsplit(base).scheme.startswith("http") or not urlsplit(base).netloc:
            raise UserError(f"--base-url {base_url!r} is not an http(s) URL.",
                            hint=f"Use the site's root, e.g. {DEFAULT_BASE[self.name]}.")
        self.base = base
        self.per_page = max(1, min(per_page or PAGE_LIMIT[self.name], PAGE_LIMIT[self.name]))

    def server_tags(self, include: list[str], exclude: list[str]) -> list[str]:
        raise NotImplementedError

    def posts(self, client: Client, include: list[str], exclude: list[str]) -> Iterator[Post]:
        raise NotImplementedError


class Danbooru(Site):
    name = "danbooru"

    def server_tags(self, include: list[str], exclude: list[str]) -> list[str]:
        """The two tags the server gets: metatags first (only the server can check them), then the
        first positive tags; every plain tag is checked client-side anyway."""
        meta = [*(t for t in include if ":" in t), *(f"-{t}" for t in exclude if ":" in t)]
        if len(meta) > DANBOORU_SERVER_TAGS:
            raise UserError(
                f"Danbooru searches at most {DANBOORU_SERVER_TAGS} tags for anonymous and basic accounts, and the "
                f"metatags {', '.join(meta)} can only be checked by the server.",
                hint="Keep at most two metatags (use --rating instead of rating: metatags).")
        plain = [t for t in include if ":" not in t]
        return [*meta, *plain][:DANBOORU_SERVER_TAGS]

    def posts(self, client: Client, include: list[str], exclude: list[str]) -> Iterator[Post]:
        url = f"{self.base}/posts.json"
        params: dict[str, Any] = {"tags": " ".join(self.server_tags(include, exclude)), "limit": self.per_page}
        while True:
            data = client.get_json(url, params)
            rows = data if isinstance(data, list) else []
            if not rows:
                return  # a page past the end is an empty list
            lowest = None
            for row in rows:
                if isinstance(row, Mapping) and "id" in row:
                    post = self.parse(row)
                    lowest = post.id if lowest is None else min(lowest, post.id)
                    yield post
            if lowest is None:
                return
            params = {**params, "page": f"b{lowest}"}  # keyset: posts below the lowest id seen

    def parse(self, row: Mapping[str, Any]) -> Post:
        file_url = row.get("file_url") or None
        if file_url:
            file_url = urljoin(self.base + "/", str(file_url))
        post_id = _int(row.get("id"))
        return Post(
            site=self.name, id=post_id, md5=str(row.get("md5") or "").lower(), file_url=file_url,
            width=_int(row.get("image_width")), height=_int(row.get("image_height")),
            rating=str(row.get("rating") or "")[:1].lower(),
            general=_split(row.get("tag_string_general")), character=_split(row.get("tag_string_character")),
            copyright=_split(row.get("tag_string_copyright")), meta=_split(row.get("tag_string_meta")),
            artist=_split(row.get("tag_string_artist")),
            deleted=bool(row.get("is_deleted")) or bool(row.get("is_banned")),
            source=str(row.get("source") or ""), page_url=f"{self.base}/posts/{post_id}",
        )


class Gelbooru(Site):
    name = "gelbooru"

    def server_tags(self, include: list[str], exclude: list[str]) -> list[str]:
        return [*include, *(f"-{t}" for t in exclude)]

    def posts(self, client: Client, include: list[str], exclude: list[str]) -> Iterator[Post]:
        url = f"{self.base}/index.php"
        pid = 0
        while True:
            params = {"page": "dapi", "s": "post", "q": "index", "json": 1,
                      "tags": " ".join(self.server_tags(include, exclude)), "limit": self.per_page, "pid": pid}
            data = client.get_json(url, params)
            rows = data.get("post") if isinstance(data, Mapping) else data
            if isinstance(rows, Mapping):  # a single post may come unwrapped
                rows = [rows]
            if not rows or not isinstance(rows, list):
                return
            for row in rows:
                if isinstance(row, Mapping) and "id" in row:
                    yield self.parse(row)
            if len(rows) < self.per_page:
                return
            pid += 1

    def parse(self, row: Mapping[str, Any]) -> Post:
        post_id = _int(row.get("id"))
        file_url = row.get("file_url") or None
        if not file_url and row.get("directory") and row.get("image"):
            file_url = f"/images/{row['directory']}/{row['image']}"  # Safebooru builds it this way
        if file_url:
            file_url = urljoin(self.base + "/", str(file_url))
        rating = str(row.get("rating") or "").lower()
        status = str(row.get("status") or "").lower()
        return Post(
            site=self.name, id=post_id, md5=str(row.get("md5") or row.get("hash") or "").lower(),
            file_url=file_url, width=_int(row.get("width")), height=_int(row.get("height")),
            rating=RATING_WORDS.get(rating, rating[:1]),
            general=_split(row.get("tags")),  # no categories in this API: all tags are "general"
            deleted=status in ("deleted", "banned"), source=str(row.get("source") or ""),
            page_url=f"{self.base}/index.php?page=post&s=view&id={post_id}",
        )


class Safebooru(Gelbooru):
    name = "safebooru"


def make_site(name: str, base_url: str | None = None, per_page: int | None = None) -> Site:
    classes = {"danbooru": Danbooru, "gelbooru": Gelbooru, "safebooru": Safebooru}
    if name not in classes:
        raise UserError(f"--site {name!r} is not one of {', '.join(SITES)}.")
    return classes[name](base_url, per_page)


def credentials_file(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/kazari/credentials.toml`` (default ``~/.config/kazari/credentials.toml``)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".config")
    return Path(base) / "kazari" / "credentials.toml"


def _from_file(site: str, env: Mapping[str, str]) -> dict[str, str]:
    path = credentials_file(env)
    try:
        import tomlkit

        table = tomlkit.parse(path.read_text(encoding="utf-8")).get(site, {})
    except FileNotFoundError:
        return {}
    except Exception as err:  # noqa: BLE001 - a broken file is the user's to fix; say where
        raise UserError(f"Cannot read the credentials file {path}: {str(err).splitlines()[0][:200]}.", path=path,
                        hint=f"It holds one table per site, e.g. [{site}] with login/api_key (docs/gather.md).") from None
    return {str(k): str(v) for k, v in dict(table).items()} if hasattr(table, "items") else {}


def credentials(site: str, env: Mapping[str, str] | None = None) -> tuple[tuple[str, str] | None, dict[str, str]]:
    """(basic auth, extra query params) from environment variables, else the user's credentials file.

    Danbooru: KAZARI_DANBOORU_LOGIN + KAZARI_DANBOORU_API_KEY (HTTP basic auth), or ``[danbooru]
    login/api_key``. Gelbooru/Safebooru: KAZARI_GELBOORU_API_KEY + KAZARI_GELBOORU_USER_ID (query
    parameters), or ``[gelbooru] api_key/user_id``. Never written anywhere.
    """
    env = os.environ if env is None else env
    prefix = f"KAZARI_{site.upper()}_"
    if site == "danbooru":
        login, key = env.get(prefix + "LOGIN", ""), env.get(prefix + "API_KEY", "")
        if not (login and key):
            stored = _from_file(site, env)
            login, key = stored.get("login", ""), stored.get("api_key", "")
        return ((login, key) if login and key else None), {}
    key, user = env.get(prefix + "API_KEY", ""), env.get(prefix + "USER_ID", "")
    if not (key and user):
        stored = _from_file(site, env)
        key, user = stored.get("api_key", ""), stored.get("user_id", "")
    return None, ({"api_key": key, "user_id": user} if key and user else {})

"""A local fake booru on 127.0.0.1 for tests, the demo and benches (never the real sites).

It answers Danbooru's ``/posts.json`` (two-tag limit with the real 422 error, keyset and numbered
paging) and the Gelbooru 0.2 ``index.php?page=dapi`` API (Gelbooru's wrapped object or Safebooru's
bare list), serves images under ``/data/``, and can inject faults per path: statuses to answer
first (e.g. one 429), a truncated body, or a hold until an event is set. Every request is logged
with its arrival time so a test can check the client's pacing.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image


@dataclass
class Logged:
    at: float
    path: str
    query: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeBooru:
    """``posts`` are Danbooru-shaped rows (``file_url`` relative to the server is fine)."""

    posts: list[dict[str, Any]]
    images: dict[str, bytes]  # "/data/x.png" -> bytes
    flavour: str = "danbooru"  # or "gelbooru", "safebooru"
    fail_first: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer first
    truncate: set[str] = field(default_factory=set)  # paths whose body is cut in half (Content-Length kept)
    holds: dict[str, threading.Event] = field(default_factory=dict)  # path -> wait for this event
    tag_limit: int = 2
    log: list[Logged] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ---- lifecycle ----
    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-booru", daemon=True).start()
        return self.base_url

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        for event in self.holds.values():
            event.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeBooru:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_to(self, prefix: str) -> list[Logged]:
        with self._lock:
            return [r for r in self.log if r.path.startswith(prefix)]

    # ---- serving ----
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._lock:
            seen = {k: h.headers[k] for k in ("User-Agent", "Authorization") if k in h.headers}
            self.log.append(Logged(time.monotonic(), parts.path, query, seen))
            queued = self.fail_first.get(parts.path)
            status = queued.pop(0) if queued else None
        if parts.path in self.holds:
            self.holds[parts.path].wait(30)
        if status is not None:
            # Only a 429 says how long to wait (as Danbooru does); other errors leave it to the client's backoff.
            extra = {"Retry-After": "0"} if status == 429 else {}
            return _send(h, status, b'{"success": false}', "application/json", extra)
        if parts.path == "/posts.json" and self.flavour == "danbooru":
            return self._danbooru(h, query)
        if parts.path == "/index.php" and self.flavour != "danbooru":
            return self._gelbooru(h, query)
        body = self.images.get(parts.path)
        if body is None:
            return _send(h, 404, b"not found", "text/plain")
        if parts.path in self.truncate:
            h.send_response(200)
            h.send_header("Content-Type", "image/png")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return None
        return _send(h, 200, body, "image/png")

    def _matching(self, tags: list[str]) -> list[dict[str, Any]]:
        def has(post: Mapping[str, Any], tag: str) -> bool:
            all_tags = set(" ".join(str(post.get(k, "")) for k in (
                "tag_string_general", "tag_string_character", "tag_string_copyright",
                "tag_string_artist", "tag_string_meta")).split())
            return (tag[1:] not in all_tags) if tag.startswith("-") else (tag in all_tags)

        rows = [p for p in self.posts if all(has(p, t) for t in tags)]
        return sorted(rows, key=lambda p: -int(p["id"]))

    def _danbooru(self, h: BaseHTTPRequestHandler, q: dict[str, str]) -> None:
        tags = q.get("tags", "").split()
        if len(tags) > self.tag_limit:
            body = {"success": False, "error": "PostQuery::TagLimitError",
                    "message": f"You cannot search for more than {self.tag_limit} tags at a time."}
            return _send(h, 422, json.dumps(body).encode(), "application/json")
        rows = self._matching(tags)
        limit = int(q.get("limit", 20))
        page = q.get("page", "1")
        if page.startswith("b"):
            rows = [p for p in rows if int(p["id"]) < int(page[1:])][:limit]
        elif page.startswith("a"):
            rows = [p for p in rows if int(p["id"]) > int(page[1:])][-limit:]
        else:
            start = (max(1, int(page)) - 1) * limit
            rows = rows[start:start + limit]
        out = [{k: v for k, v in p.items() if k != "_absent"} for p in rows]
        return _send(h, 200, json.dumps(out).encode(), "application/json")

    def _gelbooru(self, h: BaseHTTPRequestHandler, q: dict[str, str]) -> None:
        rows = self._matching(q.get("tags", "").split())
        limit, pid = int(q.get("limit", 100)), int(q.get("pid", 0))
        rows = rows[pid * limit:(pid + 1) * limit]
        posts = [_as_gelbooru(p, self.flavour) for p in rows]
        if self.flavour == "safebooru":
            body = json.dumps(posts).encode() if posts else b""  # an empty page is an empty body
        else:
            attrs = {"limit": limit, "offset": pid * limit, "count": len(self.posts)}
            body = json.dumps({"@attributes": attrs, **({"post": posts} if posts else {})}).encode()
        return _send(h, 200, body, "application/json")


def _as_gelbooru(p: Mapping[str, Any], flavour: str) -> dict[str, Any]:
    words = {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit"}
    tags = " ".join(str(p.get(k, "")) for k in (
        "tag_string_general", "tag_string_character", "tag_string_copyright", "tag_string_artist",
        "tag_string_meta")).split()
    row = {
        "id": p["id"], "width": p.get("image_width", 0), "height": p.get("image_height", 0),
        "rating": ("safe" if flavour == "safebooru" else words.get(p.get("rating", "g"), "general")),
        "tags": " ".join(sorted(tags)), "source": p.get("source", ""),
        "status": "deleted" if p.get("is_deleted") else "active",
    }
    row["hash" if flavour == "safebooru" else "md5"] = p.get("md5", "")
    if p.get("file_url"):
        row["file_url"] = p["file_url"]
    return row


def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str,
          headers: Mapping[str, str] | None = None) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


# ---- sample content ---------------------------------------------------------------------------

def noise_png(seed: int, size: tuple[int, int] = (64, 64)) -> bytes:
    """Distinct seeded noise (flat images would all share one perceptual hash)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def near_copy_png(data: bytes) -> bytes:
    """The same picture slightly resized and re-encoded: a new md5, nearly the same pHash."""
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        small = im.convert("RGB").resize((w - 4, h - 4), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, "PNG")
    return buf.getvalue()


def make_post(post_id: int, data: bytes | None, *, character: str = "uiharu_kazari",
              general: str = "1girl solo hair_flower smile", copyright: str = "toaru_kagaku_no_railgun",
              rating: str = "g", meta: str = "", ext: str = "png", **overrides: Any) -> dict[str, Any]:
    """A Danbooru ``/posts.json`` row with the real field names; its image at ``/data/<id>.<ext>``."""
    import hashlib

    w = h = 0
    if data:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    row = {
        "id": post_id, "md5": hashlib.md5(data or b"", usedforsecurity=False).hexdigest(), "file_ext": ext,
        "file_url": f"/data/{post_id}.{ext}", "large_file_url": f"/data/{post_id}.{ext}",
        "image_width": w, "image_height": h, "rating": rating,
        "tag_string_general": general, "tag_string_character": character,
        "tag_string_copyright": copyright, "tag_string_artist": "some_artist", "tag_string_meta": meta,
        "is_deleted": False, "is_banned": False, "parent_id": None,
        "source": f"https://example.invalid/art/{post_id}",
    }
    row.update(overrides)
    return row

"""A polite HTTP client for booru APIs: one User-Agent, a request interval, retries with backoff.

Every request (API page or image) goes through ``Client``, which keeps at least ``interval``
seconds between the starts of two requests, retries 429/5xx/timeouts/broken bodies with
exponential backoff (honouring a numeric ``Retry-After``), and never puts credentials into an
error message. Waits are cancel-aware so Ctrl-C or the TUI's stop button acts at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tagging.errors import UserError

if TYPE_CHECKING:
    from tagging.gather.fetch import FetchReport

USER_AGENT = "kazari/0.1 (character LoRA dataset tool; +https://github.com/kazari)"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 524})
MAX_RETRY_AFTER = 60.0  # a server asking for longer is treated as "fail now, resume later"
# Query parameters that carry credentials: never shown in a message or written anywhere.
SECRET_PARAMS = frozenset({"api_key", "user_id", "login", "password_hash"})


class FetchError(UserError):
    """The site refused or kept failing; the message names the site and what to do."""

    # Set by ``fetch`` when it fails part-way: what was saved before the failure.
    report: FetchReport | None = None


class Cancelled(Exception):
    """The caller's cancel event was set while waiting."""


@dataclass(frozen=True)
class HttpOptions:
    user_agent: str = USER_AGENT
    interval: float = 1.0  # seconds between request starts (gallery-dl uses 0.5-1.5 s for Danbooru)
    retries: int = 4  # extra tries after the first
    backoff: float = 2.0  # first retry waits this long, then doubles
    timeout: float = 30.0


class TransientError(Exception):
    """A failure worth retrying (rate limit, server error, timeout, short body)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def redact(url: str) -> str:
    """``url`` without its query string (where API keys live): safe for messages and logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class Client:
    """Thread-safe; one per fetch run. ``auth`` is a (login, key) pair for HTTP basic auth."""

    def __init__(self, options: HttpOptions = HttpOptions(), *, auth: tuple[str, str] | None = None,
                 params: Mapping[str, str] | None = None, cancel: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        import requests

        self.options = options
        self.session = requests.Session()
        self.session.headers["User-Agent"] = options.user_agent
        self.auth = auth  # sent to the API only, never to image hosts (CDNs)
        self.extra_params = dict(params or {})  # e.g. Gelbooru's api_key/user_id
        self.cancel = cancel or threading.Event()
        self._clock = clock
        self._lock = threading.Lock()
        self._last_start: float | None = None
        self.requests_made = 0

    def close(self) -> None:
        self.session.close()

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self.cancel.wait(seconds):
            raise Cancelled()
        if self.cancel.is_set():
            raise Cancelled()

    def _pace(self) -> None:
        """Block until ``interval`` has passed since the previous request started."""
        with self._lock:
            if self._last_start is not None:
                self._wait(self._last_start + self.options.interval - self._clock())
            self._last_start = self._clock()
            self.requests_made += 1

    def _once(self, url: str, params: Mapping[str, Any] | None, api: bool):
        import requests

        self._pace()
        merged = {**self.extra_params, **(params or {})} if api else None
        try:
            resp = self.session.get(url, params=merged, auth=self.auth if api else None,
                                    timeout=self.options.timeout)
            body = resp.content  # reads the whole body; a short one raises or is caught below
        except requests.Timeout:
            raise TransientError("timed out") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
            raise TransientError(f"connection broken ({type(err).__name__})") from None
        if resp.status_code in RETRY_STATUS:
            raise TransientError(f"HTTP {resp.status_code}", _retry_after(resp.headers.get("Retry-After")))
        expected = resp.headers.get("Content-Length")
        if expected and expected.isdigit() and "Content-Encoding" not in resp.headers and int(expected) != len(body):
            raise TransientError(f"short body ({len(body)} of {expected} bytes)")
        return resp, body

    def get(self, url: str, params: Mapping[str, Any] | None = None, *, api: bool = True):
        """GET with pacing and retries -> (response, body bytes). Non-retryable statuses are returned."""
        delay = self.options.backoff
        for attempt in range(self.options.retries + 1):
            try:
                return self._once(url, params, api)
            except TransientError as err:
                if attempt == self.options.retries:
                    raise FetchError(
                        f"{redact(url)} kept failing after {attempt + 1} tries (last: {err}).",
                        hint="The site may be down or rate-limiting you; wait a while and run the same "
                        "command again (images already saved are kept and skipped).",
                    ) from None
                wait = err.retry_after if err.retry_after is not None else delay
                if wait > MAX_RETRY_AFTER:
                    raise FetchError(f"{redact(url)} asked kazari to wait {wait:.0f} s ({err}).",
                                     hint="Run the same command again later; saved images are kept.") from None
                self._wait(wait)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        resp, body = self.get(url, params)
        if resp.status_code >= 400:
            return _raise_for_api(url, resp.status_code, body)
        text = body.decode("utf-8", errors="replace").strip()
        if not text:
            return None  # Gelbooru-family sites answer an empty page with an empty body
        import json

        try:
            return json.loads(text)
        except ValueError:
            raise FetchError(f"{redact(url)} did not answer with JSON (starts {text[:60]!r}).",
                             hint="Check --base-url: it must be the site's root, e.g. https://danbooru.donmai.us.") from None


def _raise_for_api(url: str, status: int, body: bytes) -> Any:
    text = body.decode("utf-8", errors="replace")
    if status == 422 and "TagLimitError" in text:
        raise FetchError(f"{redact(url)} refused the search: too many tags for this account (HTTP 422).",
                         hint="kazari sends at most two tags to Danbooru and filters the rest itself; "
                         "pass fewer search tags or set KAZARI_DANBOORU_LOGIN/KAZARI_DANBOORU_API_KEY.")
    if status in (401, 403):
        raise FetchError(f"{redact(url)} refused access (HTTP {status}).",
                         hint="Check the credentials in the KAZARI_* environment variables (docs/gather.md), "
                         "or that the site allows anonymous API use.")
    raise FetchError(f"{redact(url)} answered HTTP {status}: {text.strip()[:200]!r}.",
                     hint="Check the tags and --base-url.")

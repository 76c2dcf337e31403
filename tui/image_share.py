"""Getting a full-size image from the remote server to the user's eyes, over SSH.

Two ways, both without a graphics-capable terminal:
- the image's path to the local clipboard with OSC 52 (wrapped for tmux passthrough inside tmux);
- a tiny HTTP server on 127.0.0.1 that serves only the files explicitly shared, reachable from
  the user's machine with ``ssh -L PORT:127.0.0.1:PORT host``.

Nothing here imports Textual: the screen writes the escape sequence through its app.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import secrets
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote


def osc52(text: str, tmux: bool | None = None) -> str:
    """The OSC 52 "set clipboard" sequence for ``text``; inside tmux (``$TMUX``) wrapped as a DCS
    passthrough with its ESCs doubled, which tmux forwards when ``allow-passthrough`` is on."""
    seq = f"\x1b]52;c;{base64.b64encode(text.encode('utf-8')).decode('ascii')}\x07"
    if tmux is None:
        tmux = bool(os.environ.get("TMUX"))
    if tmux:
        seq = "\x1bPtmux;" + seq.replace("\x1b", "\x1b\x1b") + "\x1b\\"
    return seq


class ImageServer:
    """Serves shared files at ``http://127.0.0.1:PORT/TOKEN/NAME``; every other path is a 404.

    Each shared file gets an unguessable token, so a file is reachable only once the user shared
    it; nothing is ever resolved from the request path. Started on first share, on a free port.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._files: dict[str, Path] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        return self._server.server_address[1] if self._server is not None else None

    def share(self, path: Path | str) -> str:
        """Serve ``path`` (starting the server if needed); returns its URL."""
        path = Path(path).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (yet): nothing to share.")
        with self._lock:
            token = next((t for t, p in self._files.items() if p == path), None) or secrets.token_urlsafe(9)
            self._files[token] = path
            if self._server is None:
                self._start()
        return f"http://{self.host}:{self.port}/{token}/{quote(path.name)}"

    def _lookup(self, request_path: str) -> Path | None:
        parts = request_path.split("?", 1)[0].strip("/").split("/")
        if len(parts) != 2:
            return None
        with self._lock:
            path = self._files.get(parts[0])
        return path if path is not None and unquote(parts[1]) == path.name else None

    def _start(self) -> None:
        lookup = self._lookup

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
                path = lookup(self.path)
                try:
                    data = path.read_bytes() if path is not None else None
                except OSError:
                    data = None
                if data is None:
                    self.send_error(404, "not shared")
                    return
                self.send_response(200)
                self.send_header("Content-Type", mimetypes.guess_type(path.name)[0] or "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # the TUI owns the terminal: no request lines on stderr

        server = ThreadingHTTPServer((self.host, 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="kazari-image-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def ssh_hint(port: int) -> str:
    """The port-forwarding command to reach the server from the user's own machine."""
    return f"ssh -L {port}:127.0.0.1:{port} {socket.gethostname()}"

"""The loopback server of the local web: real URLs served at `http://127.0.0.1:<port>/<host>/<path>`, plus a
SerpAPI-shaped `/search` endpoint answering from the same index as the in-process search.

    with LocalWebServer(wdlib.web.LocalWeb.load(cfg.web)) as srv:
        srv.mirror_url("https://docs.python.org/3/library/os.html")   # where that page is served
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any
from urllib.parse import quote, unquote, urlsplit

class _Handler(http.server.BaseHTTPRequestHandler):
    web: Any  # the wdlib.web.LocalWeb served; set on the subclass made per server
    server_version = "wdlib-localweb/1"

    def log_message(self, format, *args):  # quiet: tests and notebooks do not want access logs
        pass

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client went away: nothing to answer
                pass

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        from urllib.parse import parse_qs

        parts = urlsplit(self.path)
        if parts.path == "/health":
            return self._json(200, {"status": "ok", "pages": len(self.web.pages), "sites": self.web.cfg.sites})
        if parts.path == "/search":
            params = parse_qs(parts.query)
            q = (params.get("q") or [""])[0]
            try:
                k = max(1, min(100, int((params.get("num") or ["10"])[0])))
            except ValueError:
                return self._json(400, {"error": "num must be an integer"})
            results = self.web.search(q, k=k)
            return self._json(200, {"search_parameters": {"engine": "local", "q": q, "num": k},
                                    "search_information": {"total_results": len(results)},
                                    "organic_results": results})
        # Pages live at /<real host>/<real path>, e.g. /docs.python.org/3/library/os.html
        real = "https://" + parts.path.lstrip("/")
        page = self.web.lookup(real)
        if page is None:
            return self._send(404, f"404 Not Found: {real} is not in the local web\n".encode(),
                              "text/plain; charset=utf-8")
        # Content-Location: the real URL the page's relative links resolve against.
        # a page may carry its own type (a PDF document); the local web's pages are HTML
        self._send(200, self.web.html(page), getattr(page, "content_type", None) or "text/html; charset=utf-8",
                   {"Content-Location": page.base_url or page.url, "X-Canonical-URL": page.url})


class LocalWebServer:
    """`with LocalWebServer(web) as srv:` serves the local web on 127.0.0.1 (a free port unless given)."""

    def __init__(self, web: Any, port: int = 0):  # web: a wdlib.web.LocalWeb
        self.web = web
        handler = type("Handler", (_Handler,), {"web": web})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)  # loopback only, never public
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def mirror_url(self, url: str) -> str:
        """Where the real `url` lives on this server."""
        parts = urlsplit(url)
        return f"{self.base_url}/{(parts.hostname or '').lower()}{quote(unquote(parts.path), safe='/:@!$&()*+,;=-._~')}"

    def start(self) -> "LocalWebServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"localweb:{self.port}", daemon=True)
        self._thread.start()
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 10.0) -> None:
        import urllib.request

        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"local web server on {self.base_url} did not become healthy") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> "LocalWebServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

"""Adversarial cases of live mode (issue 18, classes 6-9; the others are in tests/test_adversarial.py): the address
policy (literals, DNS answers, rebinding, redirects, recording a snapshot; every connection recorded by an audit hook,
private addresses NOT allowed) and the size and time budget (gzip bombs, stacked encodings, trickling servers), all
against real loopback servers.
"""

from __future__ import annotations

import asyncio
import gzip
import http.server
import ipaddress
import socket
import sys
import threading
import time
import tracemalloc
import zlib
from contextlib import contextmanager

import pytest

from wdlib.tools import Toolbox


def run(coro):
    return asyncio.run(coro)


# ---------------------------------------------------------------- connections, recorded by an audit hook
_CONNECTS: list | None = None  # every address a socket connects to while a test records them


def _audit(event: str, args) -> None:
    if event == "socket.connect" and _CONNECTS is not None:
        _CONNECTS.append(args[1])


sys.addaudithook(_audit)


@pytest.fixture()
def connections():
    global _CONNECTS
    _CONNECTS = []
    try:
        yield _CONNECTS
    finally:
        _CONNECTS = None


@pytest.fixture()
def fake_dns(monkeypatch):
    """`answers[name] = [ip, ip2, ...]`: each lookup of `name` gets the next address (the last one repeats)."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in answers:
            return real(host, port, *args, **kwargs)
        queue = answers[name]
        ip = queue.pop(0) if len(queue) > 1 else queue[0]
        port = int(port or 0)
        if ":" in ip:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


# ---------------------------------------------------------------- loopback servers
class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    connections = 0

    def verify_request(self, request, client_address):
        self.connections += 1
        return True


class _Site(http.server.BaseHTTPRequestHandler):
    routes: dict = {}
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8", headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def do_GET(self):
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            return self.send(404, b"not found", "text/plain")
        try:
            route(self)
        except OSError:  # the client gave up (a deadline): fine
            pass


@contextmanager
def site(routes: dict, host: str = "127.0.0.1"):
    srv = _Server((host, 0), type("H", (_Site,), {"routes": routes}))
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://{host}:{srv.server_address[1]}", srv
    finally:
        srv.shutdown()
        srv.server_close()


PAGE = (b"<html><head><title>Harbour</title></head><body><article><h1>The harbour</h1><p>The lighthouse is 32 metres "
        b"tall and was automated in 1987. It guards the northern approach to the harbour.</p></article></body></html>")


def live_toolbox(local_web_cfg, **web) -> Toolbox:
    cfg = local_web_cfg.model_copy(deep=True)
    cfg.web.mode = "live"
    for k, v in web.items():
        setattr(cfg.web, k, v)
    return Toolbox.from_config(cfg)


# ================================================================ 6, 7 · live mode's address policy
@pytest.mark.parametrize("url", ["http://100.100.100.200/latest/meta-data/", "http://100.64.0.1/", "http://10.1.2.3/",
                                 "http://169.254.169.254/", "http://[::ffff:127.0.0.1]:9/", "http://0.0.0.0:9/",
                                 "http://[::1]:9/", "http://127.0.0.2:9/", "http://[64:ff9b::a9fe:a9fe]/"])
def test_non_global_literals_are_refused_without_connecting(local_web_cfg, connections, url):
    with live_toolbox(local_web_cfg) as tb:
        page = run(tb.fetch(url))
    assert not page.ok and "not a public address" in page.error
    assert connections == []


def test_dns_answers_and_rebinding_never_reach_a_private_address(local_web_cfg, connections, fake_dns):
    with site({"/": lambda h: h.send(200, PAGE)}) as (base, srv):
        port = srv.server_address[1]
        fake_dns["private.test"] = ["127.0.0.1"]
        fake_dns["cgnat.test"] = ["100.100.100.200"]
        fake_dns["mixed.test"] = ["93.184.216.34", "127.0.0.1"]  # rebinding: public when checked, loopback after
        with live_toolbox(local_web_cfg, live_timeout_s=2.0) as tb:
            for name in ("private.test", "cgnat.test", "mixed.test"):
                page = run(tb.fetch(f"http://{name}:{port}/"))
                assert not page.ok and "not a public address" in page.error, (name, page.error)
        assert srv.connections == 0 and connections == []


def test_the_connection_is_checked_not_only_the_name(local_web_cfg, connections, fake_dns, monkeypatch):
    """Without the early check by name, the connecting side still resolves, checks and refuses by itself."""
    from wdlib import tools

    with site({"/": lambda h: h.send(200, PAGE)}) as (base, srv):
        port = srv.server_address[1]
        fake_dns["late.test"] = ["127.0.0.1"]
        monkeypatch.setattr(tools, "check_host", _no_check)  # only the connecting side is left to catch it
        with live_toolbox(local_web_cfg, live_timeout_s=2.0) as tb:
            page = run(tb.fetch(f"http://late.test:{port}/"))
        assert not page.ok and "not a public address" in page.error
        assert srv.connections == 0 and connections == []


def test_the_peer_the_socket_reached_is_checked(local_web_cfg, monkeypatch):
    """A network that routes a public address somewhere private (a NAT, a transparent proxy): the peer is checked
    after connecting, and nothing is sent to it."""
    import httpcore

    from wdlib import netguard, tools

    requests = []
    with site({"/": lambda h: (requests.append(h.path), h.send(200, PAGE))}) as (base, srv):
        port = srv.server_address[1]
        real_connect = httpcore.AnyIOBackend.connect_tcp

        async def misrouted(self, host, port_, **kwargs):
            return await real_connect(self, "127.0.0.1", port, **kwargs)

        async def public(host, port_=None):
            return ["93.184.216.34"]

        monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", misrouted)
        monkeypatch.setattr(netguard, "resolve", public)
        monkeypatch.setattr(tools, "check_host", _no_check)
        with live_toolbox(local_web_cfg, live_timeout_s=2.0) as tb:
            page = run(tb.fetch(f"http://routed.test:{port}/"))
        assert not page.ok and "127.0.0.1, not a public address" in page.error
        assert requests == []


async def _no_check(host):
    return None


def _loopback_is_public(monkeypatch):
    """Tests cannot reach a public address: let 127.0.0.1 (only) count as one, so the policy runs on real sockets."""
    from wdlib import netguard

    real = netguard.is_public
    monkeypatch.setattr(netguard, "is_public", lambda ip: ip == ipaddress.ip_address("127.0.0.1") or real(ip))


def test_redirects_to_private_addresses_are_refused(local_web_cfg, connections, fake_dns, monkeypatch):
    _loopback_is_public(monkeypatch)
    with site({"/": lambda h: h.send(200, b"<html><body><p>internal secret page</p></body></html>")},
              host="127.0.0.2") as (internal, internal_srv):
        iport = internal_srv.server_address[1]
        fake_dns["public.test"] = ["127.0.0.1"]
        fake_dns["internal.test"] = ["127.0.0.2"]
        targets = {"/to-literal": f"{internal}/", "/to-name": f"http://internal.test:{iport}/",
                   "/to-metadata": "http://169.254.169.254/latest/meta-data/", "/to-page": "/page"}
        routes = {path: (lambda h, t=t: h.send(302, b"", headers={"Location": t})) for path, t in targets.items()}
        routes["/page"] = lambda h: h.send(200, PAGE)
        with site(routes) as (public, public_srv):
            pport = public_srv.server_address[1]
            with live_toolbox(local_web_cfg, live_timeout_s=2.0) as tb:
                ok = run(tb.fetch(f"http://public.test:{pport}/to-page"))
                assert ok.ok and "32 metres" in ok.text  # the guard lets a public page through
                for path in ("/to-literal", "/to-name", "/to-metadata"):
                    page = run(tb.fetch(f"http://public.test:{pport}{path}"))
                    assert not page.ok and "not a public address" in page.error, path
        assert internal_srv.connections == 0
        assert {addr[0] for addr in connections} == {"127.0.0.1"}  # the peers the sockets actually reached


def test_recording_a_snapshot_keeps_the_policy_and_the_budget(local_web_cfg, tmp_path, connections, fake_dns,
                                                              monkeypatch):
    _loopback_is_public(monkeypatch)
    big = PAGE + b"<p>" + b"lorem ipsum " * 50_000 + b"</p>"
    with site({"/big": lambda h: h.send(200, big), "/gz": lambda h: h.send(200, gzip.compress(big), headers={
            "Content-Encoding": "gzip"})}) as (base, srv):
        port = srv.server_address[1]
        fake_dns["public.test"] = ["127.0.0.1"]
        fake_dns["rebind.test"] = ["93.184.216.34", "127.0.0.2"]
        snap = tmp_path / "snap"
        with live_toolbox(local_web_cfg, snapshot=str(snap), live_max_bytes=40_000) as tb:
            refused = run(tb.fetch(f"http://rebind.test:{port}/"))
            pages = [run(tb.fetch(f"http://public.test:{port}{p}")) for p in ("/big", "/gz")]
        assert "not a public address" in refused.error and all(p.truncated and "32 metres" in p.text for p in pages)
        assert {addr[0] for addr in connections} == {"127.0.0.1"}
        from warcio.archiveiterator import ArchiveIterator

        for warc in (snap / "warc").glob("*.warc.gz"):
            with open(warc, "rb") as f:
                sizes = [len(r.raw_stream.read()) for r in ArchiveIterator(f) if r.rec_type == "response"]
            assert sizes and max(sizes) <= 40_000
        connections.clear()
        with live_toolbox(local_web_cfg, mode="replay", snapshot=str(snap), live_max_bytes=40_000) as tb:
            again = [run(tb.fetch(f"http://public.test:{port}{p}")) for p in ("/big", "/gz")]
            assert run(tb.fetch(f"http://rebind.test:{port}/")).error == refused.error
        assert [p.text for p in again] == [p.text for p in pages] and connections == []  # replay never connects


# ================================================================ 8, 9 · live mode's size and time budget
@pytest.fixture(scope="module")
def bombs():
    """256 MiB of zeros as gzip (~260 KB), as gzip inside gzip (~1 KB) and as deflate."""
    gz, zl = zlib.compressobj(9, zlib.DEFLATED, 31), zlib.compressobj(9)
    zeros = bytes(1 << 24)
    inner = b"".join(gz.compress(zeros) for _ in range(16)) + gz.flush()
    deflate = b"".join(zl.compress(zeros) for _ in range(16)) + zl.flush()
    return {"gzip": inner, "gzip, gzip": gzip.compress(inner, 9), "deflate": deflate}


def _bomb_route(body: bytes, coding: str):
    return lambda h: h.send(200, body, "text/plain; charset=utf-8", {"Content-Encoding": coding})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("coding", ["gzip, gzip", "gzip", "deflate"])
def test_decompression_bombs_stay_within_the_size_budget(local_web_cfg, bombs, coding):
    max_bytes = 5_000_000
    with site({"/bomb": _bomb_route(bombs[coding], coding)}) as (base, _):
        with live_toolbox(local_web_cfg, live_allow_private=True, live_max_bytes=max_bytes) as tb:
            pages = []

            async def fetch():  # returns nothing: asyncio.run formats its task's result (a 5 MB page) on the way out
                pages.append(await tb.fetch(f"{base}/bomb"))

            tracemalloc.start()
            try:
                run(fetch())
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            page = pages[0]
    assert page.ok and page.truncated and len(page.html) == max_bytes
    assert peak < 100e6  # before: `gzip, gzip` decoded its 256 MiB at once
    assert peak < 4 * max_bytes + 16e6  # and a single gzip was decoded a whole network read (64 KiB → 64 MiB) at once


def _trickle(h, before_headers: bool = False):
    if before_headers:
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Slow: " + b"x" * 100:
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(0.2)
        return
    h.send_response(200)
    h.send_header("Content-Type", "text/html; charset=utf-8")
    h.end_headers()
    h.wfile.write(PAGE[:120])
    for byte in PAGE[120:] * 100:
        h.wfile.write(bytes([byte]))
        h.wfile.flush()
        time.sleep(0.2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("before_headers", [False, True])
def test_a_trickling_server_cannot_hold_a_visit_past_its_deadline(local_web_cfg, before_headers):
    timeout = 1.0
    with site({"/": lambda h: _trickle(h, before_headers), "/ok": lambda h: h.send(200, PAGE)}) as (base, _):
        with live_toolbox(local_web_cfg, live_allow_private=True, live_timeout_s=timeout, extract_workers=1) as tb:
            # the page-parser worker started (and its extractor imported) first: the deadline bounds the fetch,
            # web.extract_timeout_s the parse
            assert run(tb.fetch(f"{base}/ok")).ok
            start = time.perf_counter()
            page = run(tb.fetch(f"{base}/"))
            wall = time.perf_counter() - start
    assert wall <= timeout + 1.0, wall  # before: 1 byte / 0.2 s kept a 1 s-timeout visit busy for minutes
    if before_headers:
        assert not page.ok and "TimeoutError" in page.error
    else:
        assert page.truncated and page.html.startswith("<html>")  # what arrived in time is kept


def test_unknown_and_stacked_encodings_are_clear_errors(local_web_cfg):
    corrupt = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 20  # a gzip header, then no deflate stream
    with site({"/br": _bomb_route(b"\x0b\x00\x80hello\x03", "br"),
               "/many": _bomb_route(b"x", "gzip, gzip, gzip, gzip, gzip"),
               "/corrupt": _bomb_route(corrupt, "gzip")}) as (base, _):
        with live_toolbox(local_web_cfg, live_allow_private=True) as tb:
            assert "unsupported content encoding 'br'" in run(tb.fetch(f"{base}/br")).error
            assert "stacked content encodings" in run(tb.fetch(f"{base}/many")).error
            assert "cannot be decoded" in run(tb.fetch(f"{base}/corrupt")).error



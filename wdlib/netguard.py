"""The live web's guard: what the visit tool may connect to, and how much of an answer it takes.

- **Address policy**: only public addresses (`is_public`: `ipaddress`'s `is_global`, with IPv4 addresses carried
  inside IPv6 judged as IPv4). Private, loopback, link-local, carrier-grade NAT (100.64.0.0/10, where some clouds'
  metadata services live), reserved and multicast addresses are refused. `check_host` refuses a URL's host early
  (every address it resolves to must be public); `PublicOnlyBackend` enforces the policy where it matters, at
  connect time: it resolves the host itself, connects to an address it checked (a second DNS answer cannot differ:
  no rebinding) and checks the peer the socket actually reached. Redirects are new requests: each hop is checked.
  Behind an HTTP(S) proxy the proxy connects for us; then only the name check applies.
- **Size budget**: `BoundedDecoder` undoes Content-Encoding (gzip, deflate, stacked: "gzip, gzip") as the body
  streams in, never producing more than the budget asks (a 1.8 KB gzip bomb costs 1.8 KB of work per call, not 2 GB
  of memory). The time budget is the caller's (`wdlib.tools`: one deadline over every hop).

`LiveTransport` is the httpx transport of live fetches (also what a recording snapshot fetches through). This module
imports nothing from wdlib.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.request
import zlib

import httpcore
import httpx

ACCEPT_ENCODING = "gzip, deflate"  # what BoundedDecoder undoes; sent so servers use nothing else
MAX_CODINGS = 4
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(Exception):
    """The host is (or resolved to) an address that is not public."""


class UnsupportedEncoding(ValueError):
    pass


# ---------------------------------------------------------------- the address policy
def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for an address on the public internet only."""
    if ip.version == 6:
        if ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
            ip = ip.ipv4_mapped
        elif ip in _NAT64:  # 64:ff9b::10.0.0.1 reaches 10.0.0.1 through a NAT64 gateway
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def refusal(host: str, ip) -> str:
    return (f"{host} resolves to {ip}, not a public address (private or loopback, link-local, shared or reserved); "
            f"only public web pages can be visited")


def _address(text: str):
    return ipaddress.ip_address(text.split("%")[0])


async def resolve(host: str, port: int | None = None) -> list[str]:
    """The addresses of `host` (an address literal is itself), in the resolver's order, without duplicates."""
    try:
        return [str(_address(host.strip("[]")))]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


async def check_host(host: str) -> str | None:
    """None when every address of `host` is public; else why it may not be fetched."""
    try:
        addresses = await resolve(host)
    except OSError as exc:
        return f"cannot resolve host {host}: {getattr(exc, 'strerror', None) or exc}"
    for text in addresses:
        if not is_public(_address(text)):
            return refusal(host, _address(text))
    return None


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to public addresses (see the module's docstring)."""

    def __init__(self, allow_private: bool = False):
        self.inner, self.allow_private = httpcore.AnyIOBackend(), allow_private

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options=None) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await resolve(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve host {host}: {exc}") from None
        if not self.allow_private:
            for text in addresses:
                if not is_public(_address(text)):
                    raise AddressRefused(refusal(host, _address(text)))
        error: Exception = httpcore.ConnectError(f"no address for {host}")
        for text in addresses:  # the checked addresses themselves: nothing is resolved again
            try:
                stream = await self.inner.connect_tcp(text, port, timeout=timeout, local_address=local_address,
                                                      socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            peer = stream.get_extra_info("server_addr")
            if not self.allow_private and (not peer or not is_public(_address(str(peer[0])))):
                await stream.aclose()
                raise AddressRefused(refusal(host, peer[0] if peer else "an unknown peer"))
            return stream
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):
        raise AddressRefused("unix sockets are not part of the web")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class LiveTransport(httpx.AsyncBaseTransport):
    """The live web: direct connections through `PublicOnlyBackend`; HTTP(S)_PROXY / NO_PROXY honoured (the proxy,
    which the operator configured, connects for us)."""

    def __init__(self, verify, allow_private: bool = False):
        self.verify, self.allow_private = verify, allow_private
        self._direct = httpx.AsyncHTTPTransport(verify=verify, trust_env=False)
        # httpx 0.28 takes no network_backend=: give its transport a pool that connects through ours
        self._direct._pool = httpcore.AsyncConnectionPool(ssl_context=verify, network_backend=PublicOnlyBackend(
            allow_private))
        self._proxied: dict[str, httpx.AsyncHTTPTransport] = {}

    def _for(self, request: httpx.Request) -> httpx.AsyncBaseTransport:
        proxies = urllib.request.getproxies()
        proxy = proxies.get(request.url.scheme) or proxies.get("all")
        if not proxy or urllib.request.proxy_bypass(request.url.host):
            return self._direct
        if proxy not in self._proxied:
            self._proxied[proxy] = httpx.AsyncHTTPTransport(verify=self.verify, proxy=proxy, trust_env=False)
        return self._proxied[proxy]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._for(request).handle_async_request(request)

    async def aclose(self) -> None:
        for transport in (self._direct, *self._proxied.values()):
            await transport.aclose()


# ---------------------------------------------------------------- the size budget
class _Layer:
    """One Content-Encoding, undone incrementally with a bound on the output of each call."""

    def __init__(self, coding: str):
        self.coding, self.z = coding, None

    @property
    def eof(self) -> bool:
        return self.z is not None and self.z.eof

    def decompress(self, data: bytes, limit: int) -> tuple[bytes, bytes]:
        """(at most `limit` bytes out, the input not consumed yet)."""
        if self.z is None:
            if self.coding == "deflate":  # a zlib stream, or (as some servers send it) raw deflate
                wbits = zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS
            else:
                wbits = 16 + zlib.MAX_WBITS
            self.z = zlib.decompressobj(wbits)
        try:
            out = self.z.decompress(data, limit)
        except zlib.error as exc:
            raise ValueError(f"the page's {self.coding} body cannot be decoded ({exc})") from None
        return out, self.z.unconsumed_tail


class BoundedDecoder:
    """Content-Encoding undone as the body streams in; `feed(chunk, limit)` returns at most `limit` decoded bytes
    and keeps what it did not decode yet (memory: a chunk and a window per coding, whatever the ratio)."""

    CHUNK = 1 << 16

    def __init__(self, content_encoding: str | None):
        codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
        codings = ["gzip" if c == "x-gzip" else c for c in codings if c and c != "identity"]
        unknown = [c for c in codings if c not in ("gzip", "deflate")]
        if unknown:
            raise UnsupportedEncoding(f"unsupported content encoding {unknown[0]!r}")
        if len(codings) > MAX_CODINGS:
            raise UnsupportedEncoding(f"{len(codings)} stacked content encodings (at most {MAX_CODINGS} are undone)")
        self.layers = [_Layer(c) for c in reversed(codings)]  # listed in the order applied: undo the last first
        self.pending = [b""] * len(self.layers)

    def feed(self, data: bytes, limit: int) -> bytes:
        if not self.layers:
            return data[:limit]
        if not self.layers[0].eof:  # after the end of the stream: trailing bytes are ignored (as browsers do)
            self.pending[0] += data
        return self._pull(len(self.layers) - 1, limit)

    def _pull(self, i: int, limit: int) -> bytes:
        """Up to `limit` bytes out of layer `i`, pulling its input from layer i - 1 as needed."""
        out, layer = bytearray(), self.layers[i]
        while len(out) < limit and not layer.eof:
            if not self.pending[i]:
                if i == 0:
                    break
                self.pending[i] = self._pull(i - 1, self.CHUNK)
                if not self.pending[i]:
                    break
            before = self.pending[i]
            chunk, self.pending[i] = layer.decompress(before, limit - len(out))
            out += chunk
            if not chunk and self.pending[i] == before:  # no progress possible until more input arrives
                break
        return bytes(out)

"""The operator web server's guards: request bodies capped while they arrive (small before
a valid token, larger after), security headers on every answer, failed logins limited per
source address, and JSON nesting bounded before it is parsed.

fep/operator/http.py builds its ``Site`` from here; the resources stay plain twisted.web.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import attrs
from twisted.logger import Logger
from twisted.web import server

log = Logger(namespace="fep.operator.http")

BODY_LIMIT_OPEN: Final = 4 * 1024
BODY_LIMIT_AUTHENTICATED: Final = 1024 * 1024
MAX_JSON_DEPTH: Final = 400

# The status page loads its own scripts and styles and calls the API on the same origin;
# nothing inline, nothing from elsewhere, never inside a frame.
CONTENT_SECURITY_POLICY: Final = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
# Paths whose answers hold data: never kept by a browser or a proxy.
NO_STORE_PREFIXES: Final = (b"/api/", b"/api?", b"/metrics")


def add_security_headers(request: server.Request) -> None:
    for name, value in SECURITY_HEADERS:
        request.setHeader(name, value)
    path = request.uri or b""
    if path == b"/api" or path.startswith(NO_STORE_PREFIXES):
        request.setHeader(b"cache-control", b"no-store")


# -- JSON nesting ------------------------------------------------------------------------------

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep ``body``'s arrays and objects nest, counting no further than ``limit + 1``
    (strings are skipped, so brackets inside them do not count). Linear in the body; run it
    before ``json.loads``, whose recursion a deep body would exhaust."""
    brackets = _STRINGS.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        else:
            depth -= 1
    return deepest


class JsonTooDeep(ValueError):
    pass


def loads_bounded(body: bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for a body nesting at most ``limit`` levels; JsonTooDeep otherwise,
    ValueError for a body that is not JSON."""
    if json_depth(body, limit) > limit:
        raise JsonTooDeep(f"the body nests deeper than {limit} levels")
    try:
        return json.loads(body)
    except RecursionError:
        raise JsonTooDeep(f"the body nests deeper than {limit} levels") from None


# -- failed logins -----------------------------------------------------------------------------


@attrs.define
class _Source:
    first: float
    count: int = 0
    blocked_until: float = 0.0


class AuthFailures:
    """Failed logins (401s) per source address: ``limit`` failures within ``window``
    seconds and the source is refused (429) for ``block`` seconds, whatever token it sends;
    other sources are not affected. At most ``max_sources`` sources are remembered (the one
    seen longest ago is forgotten first), so a flood of addresses costs bounded memory."""

    def __init__(self, clock: Callable[[], float], *, limit: int = 10, window: float = 60.0,
                 block: float = 300.0, max_sources: int = 4096) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self.block = block
        self.max_sources = max_sources
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self.refused = 0

    def __len__(self) -> int:
        return len(self._sources)

    def blocked(self, source: str) -> float:
        """Seconds the source is still refused for (0: it may try)."""
        if self.limit <= 0:
            return 0.0
        entry = self._sources.get(source)
        if entry is None:
            return 0.0
        left = entry.blocked_until - self.clock()
        return left if left > 0 else 0.0

    def failed(self, source: str) -> bool:
        """Count one failed login from ``source``; True when that blocks it."""
        if self.limit <= 0:
            return False
        now = self.clock()
        entry = self._sources.get(source)
        if entry is None or now - entry.first > self.window:
            entry = _Source(first=now)
            self._sources[source] = entry
        entry.count += 1
        self._sources.move_to_end(source)
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        if entry.count >= self.limit and entry.blocked_until <= now:
            entry.blocked_until = now + self.block
            entry.first, entry.count = now, 0
            log.warn("API: {count} failed logins from {source} within {window} s: refused "
                     "for {block} s", count=self.limit, source=source, window=self.window,
                     block=self.block)
            return True
        return False


def source_of(request: server.Request) -> str:
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return str(host) if host is not None else str(address)


# -- the request with its body cap -------------------------------------------------------------


@attrs.frozen
class WebLimits:
    body_open: int = BODY_LIMIT_OPEN
    body_authenticated: int = BODY_LIMIT_AUTHENTICATED


DEFAULT_LIMITS: Final = WebLimits()


class GuardedRequest(server.Request):
    """A request whose body is capped while it is received: once the headers are in, the cap
    is the small one unless the request carries a valid token; a declared length over it is
    answered 413 before any of the body is read, and a body that grows past it (chunked) is
    answered 413 and its connection closed without reading the rest."""

    _body_cap: int | None = None
    _body_seen: int = 0
    _refused: bool = False

    def gotLength(self, length: int | None) -> None:
        site = getattr(self.channel, "site", None)
        cap_for = getattr(site, "body_cap", None)
        self._body_cap = cap_for(self, length) if cap_for is not None else BODY_LIMIT_OPEN
        if length is not None and length > self._body_cap:
            # Nothing of the body is read; no "100 Continue" invites it.
            self.requestHeaders.removeHeader(b"expect")
            self._refuse(f"{length} bytes declared")
            super().gotLength(0)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._body_seen += len(data)
        if self._body_cap is not None and self._body_seen > self._body_cap:
            self._refuse(f"more than {self._body_cap} bytes sent")
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # answered already; the connection is closing
        super().requestReceived(command, path, version)

    def process(self) -> None:
        add_security_headers(self)
        super().process()

    def _refuse(self, what: str) -> None:
        self._refused = True
        cap = self._body_cap
        site = getattr(self.channel, "site", None)
        larger = getattr(site, "limits", DEFAULT_LIMITS).body_authenticated
        hint = "" if cap is None or cap >= larger else (
            f"; with a valid token up to {larger} bytes")
        body = json.dumps({"error": f"the request body is too large ({what}; at most {cap} "
                                    f"bytes{hint})"}).encode()
        head = [b"HTTP/1.1 413 Payload Too Large", b"content-type: application/json",
                b"content-length: " + str(len(body)).encode(), b"connection: close",
                b"cache-control: no-store"]
        head += [name + b": " + value for name, value in SECURITY_HEADERS]
        log.debug("API: request body refused from {source}: {what}", source=source_of(self),
                  what=what)
        channel = self.channel
        if channel is None or channel.transport is None:
            return
        channel.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        channel.loseConnection()
        # Whatever else this read brought is dropped, not parsed as another request.
        channel.dataReceived = lambda data: None  # type: ignore[method-assign]


class GuardedSite(server.Site):
    """A Site of GuardedRequests: ``valid_token(request)`` tells which cap a request gets."""

    requestFactory = GuardedRequest

    def __init__(self, root: Any, *, valid_token: Callable[[server.Request], bool],
                 limits: WebLimits = DEFAULT_LIMITS, failures: AuthFailures | None = None
                 ) -> None:
        super().__init__(root)
        self.valid_token = valid_token
        self.limits = limits
        self.failures = failures

    def body_cap(self, request: server.Request, length: int | None) -> int:
        """The cap of a request's body; its token is only looked at when the body may be
        larger than the small cap (a declared larger length, or chunked)."""
        if length is not None and length <= self.limits.body_open:
            return self.limits.body_open
        if self.valid_token(request):
            return max(self.limits.body_authenticated, self.limits.body_open)
        return self.limits.body_open

"""The headers the service sends with every answer, and the forwarded headers it believes.

Every answer says ``X-Content-Type-Options: nosniff`` and may not be framed. Pages (HTML,
and scripts, whose policy governs a worker they start) carry a Content-Security-Policy
that runs scripts from this service only: no inline script, no ``eval``, no
``javascript:`` URL, so a value from the catalogue that slipped into a page as markup
still cannot run. Everything else (JSON, images, COGs) gets a policy that allows nothing.

``Forwarded`` and ``X-Forwarded-*`` headers (the host, scheme and client address that
every link is made from) count only when the request comes from one of the proxies in
``TILEKEEPER_API_FORWARDED_ALLOW_IPS`` (none by default); from anyone else they are
dropped before the app sees them."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from fastapi import FastAPI
from stac_fastapi.api.middleware import ProxyHeaderMiddleware
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from catalog_service.settings import ApiSettings, ProductSettings

# Answers that are not pages: nothing may load or run from them, nobody may frame them.
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
# What every non-page answer carries; also set by the 500 handler, whose answer Starlette
# sends from outside every middleware.
API_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": API_POLICY,
}
# Scripts only from this service's files. Inline styles stay allowed: STAC Browser's
# libraries inject <style> elements and style attributes (without them its layout breaks)
# and the campaign list colours its swatches with style attributes. Workers: STAC
# Browser's service worker, and geotiff.js (its COG display) starts decoders from data:
# URLs, which only a script already running can do.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:{store}; connect-src 'self'{store}; font-src 'self' data:; "
    "worker-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors {ancestors}"
)
# STAC Browser's download helper for assets fetched with the signed-in key (StreamSaver's
# mitm.html) is kept in a hidden frame of STAC Browser's own page between downloads.
FRAMED_BY_SELF = ("/browser/mitm.html",)
_PAGE_TYPES = ("text/html", "text/javascript", "application/javascript")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:\d{1,5})?")


def store_origin(products: ProductSettings) -> str | None:
    """The origin products on object storage are read from (their thumbnails are drawn by
    the map and STAC Browser), or None for the local store, which this service serves."""
    base = products.public_base()
    if base is None:
        return None
    parts = urlsplit(base)
    origin = f"{parts.scheme}://{parts.netloc}"
    return origin if _ORIGIN.fullmatch(origin) else None


def page_policy(store: str | None, framed_by_self: bool = False) -> str:
    return PAGE_POLICY.format(
        store=f" {store}" if store else "",
        ancestors="'self'" if framed_by_self else "'none'",
    )


class SecurityHeaders:
    """Adds nosniff, the frame options and the policy that fits the answer's type."""

    def __init__(self, app: ASGIApp, store: str | None = None) -> None:
        self.app = app
        self.page = page_policy(store)
        self.framed_page = page_policy(store, framed_by_self=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        framed = str(scope["path"]).endswith(FRAMED_BY_SELF)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", []))
                headers = MutableHeaders(scope=message)
                media_type = headers.get("content-type", "").split(";")[0].strip().lower()
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "SAMEORIGIN" if framed else "DENY"
                # A 304 (no content type) must not carry a policy: the browser would put it
                # on the cached page it revalidates (Chromium does), an API policy on a page.
                if message["status"] != 304:
                    if media_type in _PAGE_TYPES:
                        policy = self.framed_page if framed else self.page
                    else:
                        policy = API_POLICY
                    headers["Content-Security-Policy"] = policy
            await send(message)

        await self.app(scope, receive, send_with_headers)


class TrustedAddresses:
    """Addresses as uvicorn's ``--forwarded-allow-ips`` reads them: a comma list of IP
    addresses, networks (``10.0.0.0/8``) and literals (a unix socket's name), or ``*``
    for everyone; empty trusts nobody."""

    def __init__(self, spec: str) -> None:
        entries = [e.strip() for e in spec.split(",") if e.strip()]
        self.everyone = "*" in entries
        self.addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.literals: set[str] = set()
        for entry in entries:
            try:
                if "/" in entry:
                    self.networks.append(ipaddress.ip_network(entry))
                else:
                    self.addresses.add(ipaddress.ip_address(entry))
            except ValueError:
                self.literals.add(entry)

    def __bool__(self) -> bool:
        return self.everyone or bool(self.addresses or self.networks or self.literals)

    def __contains__(self, host: str) -> bool:
        if self.everyone or host in self.literals:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return address in self.addresses or any(address in n for n in self.networks)


def _forwarding(name: bytes) -> bool:
    return name == b"forwarded" or name.startswith(b"x-forwarded-")


_X_FORWARDED_LINK = (b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-port")
_SCHEMES = (b"http", b"https", b"ws", b"wss")


def _one_convention(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A trusted proxy's headers, one convention only. A proxy that sets
    ``X-Forwarded-Host/Proto/Port`` (nginx, Caddy, Traefik) passes a client's
    ``Forwarded`` on untouched, and stac-fastapi prefers ``Forwarded``: a client could
    make every link point at its host (and a forward proxy's ``Forwarded: for=`` lost the
    host and port). With X-Forwarded-* present, ``Forwarded`` is dropped; a proto other
    than http(s) or ws(s) too."""
    if any(name in _X_FORWARDED_LINK for name, _ in headers):
        headers = [(n, v) for n, v in headers if n != b"forwarded"]
    return [
        (n, v) for n, v in headers if n != b"x-forwarded-proto" or v.strip().lower() in _SCHEMES
    ]


class TrustedProxyHeaders:
    """Forwarded headers from a trusted proxy set the client's address and scheme
    (uvicorn's proxy middleware) and the host, port and scheme links are made with
    (stac-fastapi's); from anyone else they are removed from the request first."""

    def __init__(self, app: ASGIApp, trusted: str = "") -> None:
        self.app = app
        self.trusted = TrustedAddresses(trusted)
        self.links = ProxyHeaderMiddleware(app)
        self.forwarded = ProxyHeadersMiddleware(self.links, trusted_hosts=trusted)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        if self.trusted and client and client[0] in self.trusted:
            scope = dict(scope, headers=_one_convention(scope["headers"]))
            await self.forwarded(scope, receive, send)  # type: ignore[arg-type]
            return
        headers = scope["headers"]
        if any(_forwarding(name) for name, _ in headers):
            scope = dict(scope, headers=[(n, v) for n, v in headers if not _forwarding(n)])
        await self.links(scope, receive, send)


def add_security_headers(app: FastAPI, settings: ApiSettings, products: ProductSettings) -> None:
    """Security headers on every answer (outermost, so errors of the other middlewares
    carry them too), and forwarded headers from the configured proxies only, in place of
    stac-fastapi's middleware that believes them from anyone."""
    guard = Middleware(TrustedProxyHeaders, trusted=settings.forwarded_allow_ips)
    stack = [
        entry
        for entry in app.user_middleware
        if entry.cls is not ProxyHeaderMiddleware  # type: ignore[comparison-overlap]
    ]
    app.user_middleware[:] = [
        Middleware(SecurityHeaders, store=store_origin(products)),
        guard,
        *stack,
    ]

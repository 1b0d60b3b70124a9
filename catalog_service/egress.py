"""One egress policy for every URL tilekeeper is given and fetches: webhooks, openEO
back-ends, process namespaces, documents and files to ingest, results to harvest.

- Only http and https.
- Never a link-local address (169.254/16, fe80::/10), a cloud metadata service
  (169.254.169.254, fd00:ec2::254, metadata.google.internal, ...), an unspecified
  (0.0.0.0/8, ::), multicast, broadcast or reserved address: no setting allows them.
- This machine (127/8, ::1, localhost) only with ``TILEKEEPER_EGRESS_ALLOW_LOOPBACK``,
  private networks (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 and anything else
  not globally routable) only with ``TILEKEEPER_EGRESS_ALLOW_PRIVATE``, or for the hosts
  in ``TILEKEEPER_EGRESS_ALLOW_HOSTS``.

IPv6 forms of an IPv4 address (``::ffff:a.b.c.d``, 6to4, NAT64) are judged as that
address, and so are the old numeric forms resolvers accept (``127.1``, ``2130706433``).

:func:`check_url` judges a URL (its name resolved, every address checked); a session of
:func:`egress_session` checks every request and redirect hop it sends, and its
connections resolve the name themselves and connect only to an address they checked, so
a name cannot resolve to another address between the check and the connection (DNS
rebinding). Through an HTTP proxy the proxy connects: then the check is of what the
name resolves to here, right before the request.

URLs the operator configures (the tilekeeper API, the OIDC issuer, the S3 endpoint)
are trusted and do not go through this policy.

A session may also bound its answers (:class:`AnswerLimits`): each request gets a
deadline for the whole exchange and a cap on the body it reads, so a server that
drips or streams forever costs at most that. Streamed requests (downloads) are bounded
by their reader instead (ingest/download.py).

Over 400 lines on purpose: the policy and its enforcement belong together. The checks
run again when a connection is made (after DNS, on every redirect hop), inside the
transport this module builds, so the rules and the only place that applies them to
sockets change together.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from types import TracebackType
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util import parse_url
from urllib3.util.connection import allowed_gai_family, create_connection
from urllib3.util.retry import Retry

from catalog_service.settings import EgressSettings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = ("http", "https")
# Cloud metadata services outside 169.254/16 (which is refused whole): AWS over IPv6,
# Alibaba Cloud, Azure's host endpoint.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
# 0.0.0.0/8 is "this network": Linux connects 0.0.0.0 to this machine.
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
NAT64 = ipaddress.ip_network("64:ff9b::/96")

ALWAYS = "refused always, no setting allows it"
LOOPBACK = "this machine: TILEKEEPER_EGRESS_ALLOW_LOOPBACK=true allows it"
PRIVATE = "a private network: TILEKEEPER_EGRESS_ALLOW_PRIVATE=true allows it"


class EgressRefused(ValueError):
    """A URL the egress policy does not let tilekeeper fetch; the message says why and
    which setting, if any, would allow it."""


class RefusedRequest(requests.ConnectionError, EgressRefused):
    """A request an egress session refused to send. Also a ConnectionError, so code
    that copes with a host that does not answer copes with a refused one."""


def _embedded_ipv4(address: Address) -> Address:
    """The IPv4 address an IPv6 one leads to (mapped, 6to4, NAT64), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_refusal(address: Address, policy: EgressSettings, trusted: bool = False) -> str | None:
    """Why ``address`` may not be fetched, or None. ``trusted``: its host is in
    ``allow_hosts``, which lifts the loopback and private refusals only."""
    address = _embedded_ipv4(address)
    if address in METADATA_ADDRESSES:
        return f"a cloud metadata address, {ALWAYS}"
    if address.is_link_local:
        return f"a link-local address, {ALWAYS}"
    if address.is_unspecified or address in THIS_NETWORK:
        return f"an unspecified address, {ALWAYS}"
    if address.is_multicast:
        return f"a multicast address, {ALWAYS}"
    if address.is_loopback:  # before is_reserved: ::1 lies in the reserved ::/8
        return None if policy.allow_loopback or trusted else LOOPBACK
    if address.is_reserved:  # 240/4 with the broadcast address, ::/8
        return f"a reserved or broadcast address, {ALWAYS}"
    if not address.is_global:
        return None if policy.allow_private or trusted else PRIVATE
    return None


def _literal(host: str) -> Address | None:
    """The address a host names by itself, in any form the system's resolver takes."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host):
        try:  # 127.1, 0x7f.0.0.1, 2130706433: what inet_aton (and so getaddrinfo) reads
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _normal(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def _target(url: str) -> tuple[str, str, int]:
    """(origin to show, host, port) of an http(s) URL, parsed as requests sends it."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in SCHEMES:
        given = f"{scheme}:" if scheme else "a URL without a scheme"
        raise EgressRefused(f"only http and https URLs are fetched, not {given}")
    try:
        parts = parse_url(requests.Request("GET", url).prepare().url or "")
    except (requests.RequestException, ValueError) as exc:
        raise EgressRefused(f"not a URL that can be fetched: {exc}") from None
    if not parts.host:
        raise EgressRefused(f"{url!r} names no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    # The origin only: paths and queries of webhooks and signed URLs carry secrets.
    return f"{parts.scheme}://{parts.netloc}", _normal(parts.host), port


def _trusted(host: str, policy: EgressSettings) -> bool:
    return host in {_normal(h) for h in policy.allow_hosts}


def _name_refusal(host: str, policy: EgressSettings) -> str | None:
    """Why a host name may not be fetched whatever it resolves to, or None."""
    if host in METADATA_NAMES:
        return f"a cloud metadata service, {ALWAYS}"
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always this machine
        return address_refusal(ipaddress.IPv4Address("127.0.0.1"), policy, _trusted(host, policy))
    return None


def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (raises socket.gaierror)."""
    infos = socket.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def check_addresses(
    shown: str, host: str, addresses: list[Address], policy: EgressSettings
) -> None:
    """Refuse when any of ``addresses`` (of ``host``) is refused."""
    trusted = _trusted(host, policy)
    for address in addresses:
        reason = address_refusal(address, policy, trusted)
        if reason:
            judged = _embedded_ipv4(address)
            named = "" if host == str(judged) else f" ({host} leads to {judged})"
            raise EgressRefused(f"refused to fetch {shown}{named}: {reason}")


def check_url(url: str, policy: EgressSettings | None = None, *, resolve_name: bool = True) -> None:
    """Raise EgressRefused unless ``policy`` (default: the environment's) lets ``url``
    be fetched. A host name is resolved and every address it has is checked; with
    ``resolve_name=False`` only what the URL itself says is (when a URL is stored: what
    a name resolves to is checked when it is fetched). A name that does not resolve
    passes: there is nothing to connect to."""
    policy = policy or EgressSettings()
    shown, host, port = _target(url)
    literal = _literal(host)
    if literal is not None:
        check_addresses(shown, host, [literal], policy)
        return
    reason = _name_refusal(host, policy)
    if reason:
        raise EgressRefused(f"refused to fetch {shown}: {reason}")
    if resolve_name:
        try:
            addresses = resolve(host, port)
        except (socket.gaierror, UnicodeError):
            return
        check_addresses(shown, host, addresses, policy)


def check_stored(urls: Iterable[tuple[str, str]], policy: EgressSettings | None = None) -> None:
    """Check URLs about to be stored, ``(what, url)`` pairs, by what they say themselves
    (names are resolved when fetched); EgressRefused names the first refused."""
    policy = policy or EgressSettings()
    for what, url in urls:
        try:
            check_url(url, policy, resolve_name=False)
        except EgressRefused as exc:
            raise EgressRefused(f"{what}: {exc}") from None


def check_shape(url: str) -> str:
    """``url`` unless it is refused whatever the settings (not http(s), a link-local,
    metadata, unspecified, multicast or reserved address): for validators, which have
    no settings. Returns the URL."""
    check_url(url, EgressSettings(allow_loopback=True, allow_private=True), resolve_name=False)
    return url


def _connect_checked(conn: HTTPConnection, policy: EgressSettings) -> socket.socket:
    """A socket to one of the addresses of ``conn``'s host, all of which are checked
    first: the connection goes to an address that was checked, never to what a second
    lookup answers. Errors are urllib3's own, so retries and messages are unchanged."""
    shown = f"{conn.host}:{conn.port}"
    host = _normal(conn.host)
    literal = _literal(host)
    if literal is None:
        reason = _name_refusal(host, policy)
        if reason:
            raise EgressRefused(f"refused to fetch {shown}: {reason}")
        try:
            addresses = resolve(host, conn.port)
        except socket.gaierror as exc:
            raise NameResolutionError(conn.host, conn, exc) from exc
    else:
        addresses = [literal]
    check_addresses(shown, host, addresses, policy)
    failure: OSError | None = None
    for address in addresses:
        try:
            return create_connection(
                (str(address), conn.port),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except OSError as exc:
            failure = exc
    if isinstance(failure, TimeoutError):
        raise ConnectTimeoutError(
            conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
        ) from failure
    raise NewConnectionError(conn, f"Failed to establish a new connection: {failure}")


def _checked_pools(policy: EgressSettings) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pools whose connections connect through :func:`_connect_checked`."""

    class CheckedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _connect_checked(self, policy)

    class CheckedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _connect_checked(self, policy)

    class CheckedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = CheckedHTTPConnection

    class CheckedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = CheckedHTTPSConnection

    return {"http": CheckedHTTPConnectionPool, "https": CheckedHTTPSConnectionPool}


# How often the watchdog looks again for a connection to shut once the deadline passed
# (one made after it, while the transfer was still connecting).
WATCH_POLL_S = 0.2

# -- a transfer's deadline ----------------------------------------------------------

_current = threading.local()


class TransferDeadline:
    """Shuts down the connection of a transfer once its deadline passes, so a transfer
    ends whatever it waits for: connecting, headers dripping in (which no socket timeout
    bounds, each byte restarts it), a body read."""

    def __init__(self, seconds: float) -> None:
        self.conn: HTTPConnection | None = None
        self.expired = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(seconds,), name="download-deadline", daemon=True
        )

    def __enter__(self) -> TransferDeadline:
        _current.watch = self
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _current.watch = None
        self._done.set()

    def _run(self, seconds: float) -> None:
        if self._done.wait(seconds):
            return
        self.expired.set()
        shut: socket.socket | None = None
        while True:
            sock = getattr(self.conn, "sock", None)
            if isinstance(sock, socket.socket) and sock is not shut:
                # socket.socket's own shutdown: an SSLSocket's would also drop its TLS
                # state under the reading thread's feet.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                shut = sock
            if self._done.wait(WATCH_POLL_S):
                return


def _watched_pool(base: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    """``base`` telling the transfer running on this thread which connection it got."""
    get_conn = base._get_conn

    def _get_conn(self: HTTPConnectionPool, timeout: float | None = None) -> Any:
        conn = get_conn(self, timeout)
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.conn = conn
        return conn

    return type(f"Watched{base.__name__}", (base,), {"_get_conn": _get_conn})


@dataclass(frozen=True)
class AnswerLimits:
    """How long a request may take in all and how much of an answer is read."""

    connect_s: float
    total_s: float
    max_bytes: int


class AnswerTooLarge(requests.RequestException):
    """An answer larger than the session's AnswerLimits allow."""


class AnswerTooSlow(requests.Timeout):
    """An answer that took longer than the session's AnswerLimits allow."""


READ_CHUNK = 64 << 10


class EgressAdapter(HTTPAdapter):
    """A requests transport that sends only what the policy allows (see the module)."""

    def __init__(
        self, policy: EgressSettings, limits: AnswerLimits | None = None, **kwargs: Any
    ) -> None:
        self.policy = policy  # before HTTPAdapter.__init__, which makes the pool manager
        self.limits = limits
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        # Watched: a TransferDeadline finds the connection a request got (see _bounded).
        self.poolmanager.pool_classes_by_scheme = {
            scheme: _watched_pool(cls) for scheme, cls in _checked_pools(self.policy).items()
        }

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        url = request.url or ""
        try:
            # Direct, the connection resolves and checks; through a proxy, check here.
            check_url(url, self.policy, resolve_name=bool(select_proxy(url, proxies)))
            if self.limits is None or stream:
                return super().send(request, stream, timeout, verify, cert, proxies)
            return self._bounded(request, timeout, verify, cert, proxies, self.limits)
        except EgressRefused as exc:
            raise RefusedRequest(str(exc), request=request) from None

    def _bounded(
        self,
        request: requests.PreparedRequest,
        timeout: Any,
        verify: bool | str,
        cert: Any,
        proxies: Mapping[str, str] | None,
        limits: AnswerLimits,
    ) -> requests.Response:
        """Send and read the whole answer within the deadline (a watchdog shuts the
        connection when it passes, so headers or chunk sizes dripping in end too) and
        the size cap."""
        shown = _shown(request.url or "")
        read_s = limits.total_s
        if isinstance(timeout, int | float):
            read_s = min(read_s, float(timeout))

        def too_slow() -> AnswerTooSlow:
            return AnswerTooSlow(
                f"{shown}: no whole answer within {limits.total_s:g} s "
                "(TILEKEEPER_RUNNER_REQUEST_TIMEOUT_S)",
                request=request,
            )

        with TransferDeadline(limits.total_s) as watch:
            try:
                response = super().send(
                    request, True, (limits.connect_s, read_s), verify, cert, proxies
                )
            except requests.RequestException:
                if watch.expired.is_set():
                    raise too_slow() from None
                raise
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limits.max_bytes:
                response.close()
                raise AnswerTooLarge(
                    f"{shown}: an answer of {declared} bytes, more than the "
                    f"{limits.max_bytes} read (TILEKEEPER_RUNNER_MAX_ANSWER_BYTES)",
                    request=request,
                )
            body = bytearray()
            try:
                while chunk := response.raw.read1(READ_CHUNK, decode_content=True):
                    body += chunk
                    if len(body) > limits.max_bytes:
                        raise AnswerTooLarge(
                            f"{shown}: an answer of more than "
                            f"{limits.max_bytes} bytes (TILEKEEPER_RUNNER_MAX_ANSWER_BYTES)",
                            request=request,
                        )
                    if watch.expired.is_set():
                        raise too_slow()
            except requests.RequestException:  # ours above (an OSError too)
                raise
            except (Urllib3Error, HTTPException, OSError) as exc:
                if watch.expired.is_set():
                    raise too_slow() from None
                raise requests.ConnectionError(f"{shown}: {exc}", request=request) from None
            finally:
                response.close()
            if watch.expired.is_set():  # the watchdog's shutdown reads as an end
                raise too_slow()
        response._content = bytes(body)
        return response


def _shown(url: str) -> str:
    """A URL for a message: without its query (signed URLs carry secrets there)."""
    return url.split("?", 1)[0][:200]


def egress_session(
    policy: EgressSettings | None = None,
    retry: Retry | int = 0,
    limits: AnswerLimits | None = None,
) -> requests.Session:
    """A requests session that sends only what ``policy`` (default: the environment's)
    allows, each redirect hop checked, at most ``policy.max_redirects`` of them; a
    refused request raises RefusedRequest. ``retry``: the transport's retries (urllib3);
    ``limits``: a deadline and a size cap for every answer not streamed."""
    policy = policy or EgressSettings()
    session = requests.Session()
    adapter = EgressAdapter(policy, limits, max_retries=retry)
    session.adapters.clear()
    # "" catches every other scheme (a redirect to file:, gopher:, ...): refused with
    # the policy's message rather than requests' "no connection adapter".
    for prefix in ("https://", "http://", ""):
        session.mount(prefix, adapter)
    session.max_redirects = policy.max_redirects
    return session

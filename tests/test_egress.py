"""The egress policy (catalog_service/egress.py): which addresses a URL may lead to, per
setting; an egress session checks every request and redirect hop before it connects and
connects only to the address it checked; and where tilekeeper fetches: a campaign's URLs
refused when stored (400), webhooks that follow no redirect and give up a refused URL,
back-ends the runner gives no tiles, ingest of an item whose assets lead elsewhere.

Traffic goes to 127.0.0.1 only: every test here fails on a connection anywhere else, and
the refused addresses are asserted never to be connected to."""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.database import Database, products_settings
from support.servers import loopback_server, send_json
from typer.testing import CliRunner

from catalog_service.campaign_run import build_manager
from catalog_service.cli.main import app
from catalog_service.egress import EgressRefused, RefusedRequest, check_url, egress_session
from catalog_service.errors import TilekeeperError
from catalog_service.jobs.campaign import Backend, CampaignDefinition, NotifyPolicy, ProcessSpec
from catalog_service.runner.logins import BackendDown, BackendLink, login
from catalog_service.runner.notify import Notifier
from catalog_service.runner.wiring import check_fitness, refused_backends
from catalog_service.settings import EgressSettings

LOOPBACK = "TILEKEEPER_EGRESS_ALLOW_LOOPBACK=true allows it"
PRIVATE = "TILEKEEPER_EGRESS_ALLOW_PRIVATE=true allows it"
ALWAYS = "no setting allows it"


def policy(loopback: bool = False, private: bool = False, **more: Any) -> EgressSettings:
    """Settings given in full, whatever the environment says."""
    return EgressSettings(allow_loopback=loopback, allow_private=private, **more)


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every internet address this process connects to during the test; a connection to
    anything but 127.0.0.1 fails the test instead of being made."""
    seen: list[Any] = []
    real = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            seen.append(address)
            if address[0] != "127.0.0.1":
                raise AssertionError(f"a test connected to {address}")
        real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


class Names:
    """A resolver of made-up names: ``answers`` (name -> addresses) and the ``lookups``
    of each; a lookup of any other name but localhost (/etc/hosts) fails the test."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.lookups: Counter[str] = Counter()
        self.real = socket.getaddrinfo

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        host = host.decode() if isinstance(host, bytes) else str(host)
        if host in self.answers:
            self.lookups[host] += 1
            return [
                (
                    socket.AF_INET6 if ":" in a else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (a, port),
                )
                for a in self.answers[host]
            ]
        try:
            if host != "localhost":
                socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        except OSError:
            raise AssertionError(f"a test looked up the name {host!r}") from None
        return self.real(host, port, *args, **kwargs)


@pytest.fixture()
def names(monkeypatch: pytest.MonkeyPatch) -> Names:
    resolver = Names()
    monkeypatch.setattr(socket, "getaddrinfo", resolver.getaddrinfo)
    return resolver


class Hits:
    """Requests a loopback server received: (method, path, Host header)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def handler(
        self, answer: Callable[[BaseHTTPRequestHandler], None]
    ) -> type[BaseHTTPRequestHandler]:
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                seen.append((self.command, self.path, self.headers.get("Host", "")))
                answer(self)

            do_GET = do_POST = _any

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def redirect_to(location: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def ok(handler: BaseHTTPRequestHandler) -> None:
    send_json(handler, b"{}")


# -- check_url ---------------------------------------------------------------------------

CASES = [
    # (URL, loopback allowed, private allowed, part of the refusal or None when fetched)
    ("http://169.254.169.254/latest/meta-data/", True, True, "cloud metadata"),
    ("http://[::ffff:169.254.169.254]/latest/", True, True, "cloud metadata"),
    ("http://[::ffff:a9fe:a9fe]/", True, True, "cloud metadata"),
    ("http://[fd00:ec2::254]/latest/", True, True, "cloud metadata"),
    ("http://[2002:a9fe:a9fe::]/", True, True, "cloud metadata"),  # 6to4 of it
    ("http://metadata.google.internal/computeMetadata/v1/", True, True, "cloud metadata"),
    ("http://METADATA.google.internal./", True, True, "cloud metadata"),
    ("http://169.254.10.1/", True, True, "link-local"),
    ("http://[fe80::1]/", True, True, "link-local"),
    ("http://0.0.0.0:8080/", True, True, "unspecified"),
    ("http://0/", True, True, "unspecified"),
    ("http://[::]/", True, True, "unspecified"),
    ("http://224.0.0.251/", True, True, "multicast"),
    ("http://[ff02::1]/", True, True, "multicast"),
    ("http://255.255.255.255/", True, True, "broadcast"),
    ("http://240.0.0.1/", True, True, "reserved"),
    ("http://10.0.0.1/", False, False, PRIVATE),
    ("http://10.0.0.1/", True, False, PRIVATE),
    ("http://10.0.0.1/", False, True, None),
    ("http://172.16.4.2/", False, False, PRIVATE),
    ("http://192.168.1.1/", False, False, PRIVATE),
    ("http://100.64.0.1/", False, False, PRIVATE),
    ("http://[fd12:3456::1]/", False, False, PRIVATE),
    ("http://[::ffff:10.0.0.1]/", False, False, PRIVATE),
    ("http://127.0.0.1/", False, False, LOOPBACK),
    ("http://127.0.0.1/", False, True, LOOPBACK),
    ("http://127.0.0.1/", True, False, None),
    ("http://127.8.9.10:8081/", False, False, LOOPBACK),
    ("http://[::1]:8080/", False, False, LOOPBACK),
    ("http://[::ffff:127.0.0.1]/", False, False, LOOPBACK),
    ("http://2130706433/", False, False, LOOPBACK),  # 127.0.0.1 written as one number
    ("http://0x7f.1/", False, False, LOOPBACK),
    ("http://localhost:8080/", False, False, LOOPBACK),
    ("http://api.localhost/", False, False, LOOPBACK),
    ("http://localhost:8080/", True, False, None),
    ("https://8.8.8.8/hook", False, False, None),  # public (a literal: never contacted)
    ("file:///etc/passwd", True, True, "only http and https"),
    ("gopher://127.0.0.1:25/", True, True, "only http and https"),
    ("ftp://example.org/x.tif", True, True, "only http and https"),
    ("/relative/path", True, True, "only http and https"),
    ("http:///no-host", True, True, "not a URL that can be fetched"),
]


@pytest.mark.parametrize(("url", "loopback", "private", "refusal"), CASES)
def test_check_url_per_class_of_address_and_setting(
    names: Names, url: str, loopback: bool, private: bool, refusal: str | None
) -> None:
    # `names` fails the test on any DNS lookup: these URLs are judged by what they say.
    if refusal is None:
        check_url(url, policy(loopback, private))
        return
    with pytest.raises(EgressRefused) as refused:
        check_url(url, policy(loopback, private))
    assert refusal in str(refused.value)
    assert isinstance(refused.value, ValueError)


def test_every_address_a_name_resolves_to_is_checked(names: Names) -> None:
    names.answers["public.test"] = ["93.184.216.34"]
    names.answers["split.test"] = ["93.184.216.34", "10.1.2.3"]
    names.answers["inside.test"] = ["2001:db8::1", "::1"]
    check_url("https://public.test/x", policy())
    with pytest.raises(EgressRefused, match=r"split\.test leads to 10\.1\.2\.3.*ALLOW_PRIVATE"):
        check_url("https://split.test/x", policy())
    with pytest.raises(EgressRefused, match=r"inside\.test leads to"):
        check_url("https://inside.test/x", policy(private=True))
    check_url("https://split.test/x", policy(private=True))
    # Stored URLs are judged without a lookup: the name is checked when fetched.
    check_url("https://split.test/x", policy(), resolve_name=False)
    assert names.lookups["split.test"] == 2


def test_allowed_hosts_lift_the_loopback_and_private_refusals_only() -> None:
    trusting = policy(allow_hosts="openeo.internal,10.0.0.5,127.0.0.1")
    assert list(trusting.allow_hosts) == ["openeo.internal", "10.0.0.5", "127.0.0.1"]
    check_url("http://10.0.0.5:8080/openeo", trusting)
    check_url("http://127.0.0.1:8080/", trusting)
    with pytest.raises(EgressRefused, match="ALLOW_PRIVATE"):
        check_url("http://10.0.0.6/", trusting)
    for always in ("http://169.254.169.254/", "http://0.0.0.0/"):
        with pytest.raises(EgressRefused, match=ALWAYS):
            check_url(always, policy(True, True, allow_hosts=["169.254.169.254", "0.0.0.0"]))


def test_messages_show_the_origin_not_the_secrets_of_a_url() -> None:
    with pytest.raises(EgressRefused) as refused:
        check_url("http://user:pass@10.0.0.1:9000/hooks/T0/SECRET?token=abc", policy())
    message = str(refused.value)
    assert "http://10.0.0.1:9000" in message
    assert not any(secret in message for secret in ("pass", "SECRET", "abc"))


# -- an egress session -------------------------------------------------------------------


def test_a_refused_request_is_refused_before_any_connection(connections: list[Any]) -> None:
    hits = Hits()
    with loopback_server(hits.handler(ok)) as port:
        url = f"http://127.0.0.1:{port}/x"
        with pytest.raises(RefusedRequest, match="ALLOW_LOOPBACK") as refused:
            egress_session(policy()).get(url, timeout=5)
        assert isinstance(refused.value, requests.ConnectionError)  # handled as unreachable
        assert connections == [] and hits.seen == []
        assert egress_session(policy(loopback=True)).get(url, timeout=5).status_code == 200
        assert connections == [("127.0.0.1", port)] and len(hits.seen) == 1


def test_the_connection_goes_to_the_address_that_was_checked(
    names: Names, connections: list[Any]
) -> None:
    names.answers["rebind.test"] = ["127.0.0.1"]
    hits = Hits()
    with loopback_server(hits.handler(ok)) as port:
        url = f"http://rebind.test:{port}/pinned"
        with pytest.raises(RefusedRequest, match=r"rebind\.test leads to 127\.0\.0\.1"):
            egress_session(policy()).get(url, timeout=5)
        assert connections == [] and hits.seen == []
        # Allowed: one lookup, by the connection itself, which connects to its answer
        # (the system's resolver does not know rebind.test).
        names.lookups.clear()
        assert egress_session(policy(loopback=True)).get(url, timeout=5).status_code == 200
        assert names.lookups["rebind.test"] == 1
        assert connections == [("127.0.0.1", port)]
        assert hits.seen == [("GET", "/pinned", f"rebind.test:{port}")]


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for ``name`` and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_checks_the_name_on_the_certificate_at_the_address_checked(
    tmp_path: Path, names: Names, connections: list[Any]
) -> None:
    names.answers["egress.test"] = ["127.0.0.1"]
    cert, key = self_signed(tmp_path, "egress.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    hits = Hits()
    server = ThreadingHTTPServer(("127.0.0.1", 0), hits.handler(ok))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port
    try:
        session = egress_session(policy(loopback=True))
        answer = session.get(f"https://egress.test:{port}/tls", verify=str(cert), timeout=5)
        assert answer.status_code == 200
        assert hits.seen == [("GET", "/tls", f"egress.test:{port}")]
        # The address is not the name the certificate is for: TLS still checks the name.
        with pytest.raises(requests.exceptions.SSLError):
            session.get(f"https://127.0.0.1:{port}/", verify=str(cert), timeout=5)
        with pytest.raises(RefusedRequest, match="ALLOW_LOOPBACK"):
            egress_session(policy()).get(f"https://egress.test:{port}/", verify=str(cert))
    finally:
        server.shutdown()
        server.server_close()
    assert len(hits.seen) == 1
    assert {address[0] for address in connections} == {"127.0.0.1"}


def test_each_redirect_hop_is_checked_and_hops_are_bounded(connections: list[Any]) -> None:
    hits = Hits()
    session = egress_session(policy(loopback=True, max_redirects=3))
    for location, reason in (
        ("http://169.254.169.254/latest/", "cloud metadata"),
        ("file:///etc/passwd", "only http and https"),
        ("http://10.0.0.1/", "ALLOW_PRIVATE"),
    ):
        with (
            loopback_server(hits.handler(redirect_to(location))) as port,
            pytest.raises(RefusedRequest, match=reason),
        ):
            session.get(f"http://127.0.0.1:{port}/", timeout=5)
    assert len(hits.seen) == 3  # each first hop; never the next
    hits.seen.clear()
    with (
        loopback_server(hits.handler(redirect_to("/again"))) as port,
        pytest.raises(requests.TooManyRedirects),
    ):
        session.get(f"http://127.0.0.1:{port}/", timeout=5)
    assert len(hits.seen) == 4  # the request and 3 redirects
    assert {address[0] for address in connections} == {"127.0.0.1"}


def test_through_a_proxy_the_name_is_checked_before_the_request(
    names: Names, connections: list[Any]
) -> None:
    names.answers["inside.test"] = ["10.0.0.7"]
    hits = Hits()
    with loopback_server(hits.handler(ok)) as port:
        proxies = {"http": f"http://127.0.0.1:{port}"}
        with pytest.raises(RefusedRequest, match=r"inside\.test leads to 10\.0\.0\.7"):
            egress_session(policy()).get("http://inside.test/", proxies=proxies, timeout=5)
    assert connections == [] and hits.seen == []


# -- where tilekeeper fetches --------------------------------------------------------------


def test_definitions_refuse_what_no_setting_allows() -> None:
    for build in (
        lambda: Backend(name="a", url="file:///etc/passwd"),
        lambda: Backend(name="a", url="http://169.254.169.254/openeo"),
        lambda: NotifyPolicy(webhooks=["http://[::ffff:169.254.169.254]/hook"]),
        lambda: NotifyPolicy(webhooks=["gopher://127.0.0.1:25/"]),
        lambda: ProcessSpec(process_id="p", namespace="http://metadata.google.internal/udp"),
    ):
        with pytest.raises(pydantic.ValidationError):
            build()
    # What a setting may allow is checked where it is stored or fetched, with the settings.
    Backend(name="a", url="http://127.0.0.1:8081/")
    ProcessSpec(process_id="p", namespace="vito")  # a back-end's namespace, not a URL


def test_a_campaign_with_a_refused_url_is_refused_when_stored(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch, connections: list[Any]
) -> None:
    def create(**extra: Any) -> httpx.Response:
        return http.post("/campaigns", json={"id": f"egress-{uuid.uuid4().hex[:8]}", **extra})

    refusals = {
        "cloud metadata": create(notify={"webhooks": ["http://169.254.169.254/latest/"]}),
        "only http and https": create(backends=[{"name": "a", "url": "file:///etc/passwd"}]),
        PRIVATE: create(backends=[{"name": "a", "url": "http://10.0.0.1:8080/openeo"}]),
        "link-local": create(process={"process_id": "p", "namespace": "http://[fe80::1]/p"}),
    }
    monkeypatch.setenv("TILEKEEPER_EGRESS_ALLOW_LOOPBACK", "false")  # the API's setting
    refusals[LOOPBACK] = create(notify={"webhooks": ["http://127.0.0.1:9/hook"]})
    for reason, response in refusals.items():
        assert response.status_code == 400, response.text
        assert reason in response.json()["description"]
    monkeypatch.setenv("TILEKEEPER_EGRESS_ALLOW_LOOPBACK", "true")
    created = create(backends=[{"name": "a", "url": "http://127.0.0.1:9/openeo"}])
    assert created.status_code == 201, created.text
    campaign = created.json()["id"]
    for patch, reason in (
        ({"notify": {"webhooks": ["http://[::ffff:169.254.169.254]/"]}}, "cloud metadata"),
        ({"backends": [{"name": "b", "url": "http://192.168.0.9/"}]}, PRIVATE),
    ):
        response = http.patch(f"/campaigns/{campaign}", json=patch)
        assert response.status_code == 400, response.text
        assert reason in response.json()["description"]
    stored = http.get(f"/campaigns/{campaign}").json()
    assert [b["url"] for b in stored["backends"]] == ["http://127.0.0.1:9/openeo"]
    assert stored["notify"]["webhooks"] == []
    assert {address[0] for address in connections} <= {"127.0.0.1"}


def test_a_url_stored_before_these_rules_still_lists_and_is_refused_when_fetched(
    http: httpx.Client, database: Database
) -> None:
    """A definition stored earlier with a URL the rules now refuse must not break reads
    (listings would fail for everybody); the runner still refuses to fetch it."""
    campaign = f"egress-old-{uuid.uuid4().hex[:8]}"
    backend = {"name": "a", "url": "http://127.0.0.1:9/openeo"}
    assert http.post("/campaigns", json={"id": campaign, "backends": [backend]}).status_code == 201
    database.sql(
        "UPDATE pgstac.collections SET content = jsonb_set(content, "
        "'{tilekeeper:campaign,backends,0,url}', '\"file:///etc/passwd\"') WHERE id = %s",
        campaign,
    )
    listed = http.get("/campaigns", params={"f": "json"})
    assert listed.status_code == 200, listed.text
    shown = http.get(f"/campaigns/{campaign}")
    assert shown.status_code == 200 and shown.json()["backends"][0]["url"].startswith("file:")
    fields = {k: v for k, v in shown.json().items() if k != "links"}
    stored = CampaignDefinition.model_validate(fields, context={"stored": True})
    refused = refused_backends(stored.backends)
    assert list(refused) == ["a"] and "http" in refused["a"]


def test_webhooks_follow_no_redirect_and_give_up_a_refused_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, connections: list[Any]
) -> None:
    caplog.set_level(logging.INFO, logger="catalog_service.runner.notify")
    target, hook = Hits(), Hits()
    with (
        loopback_server(target.handler(ok)) as target_port,
        loopback_server(hook.handler(redirect_to(f"http://127.0.0.1:{target_port}/"))) as port,
    ):
        webhooks = [f"http://127.0.0.1:{port}/hook", "http://10.0.0.1:9/hook"]
        notifier = Notifier("egress", NotifyPolicy(webhooks=webhooks), folder=tmp_path)
        notifier.event("finished", "all", "the campaign is over")
        notifier.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (hook.seen and "given up" in caplog.text):
            time.sleep(0.1)
        left = notifier.close(wait_s=1)
    assert hook.seen and hook.seen[0][:2] == ("POST", "/hook")
    assert target.seen == []  # the redirect was not followed
    assert left == 1  # the redirecting webhook's delivery waits for the next run
    assert "a redirect, not followed" in caplog.text
    given_up = [r.getMessage() for r in caplog.records if "given up" in r.getMessage()]
    assert len(given_up) == 1 and PRIVATE in given_up[0]
    assert {address[0] for address in connections} == {"127.0.0.1"}


def test_the_runner_gives_no_tiles_to_a_refused_backend(
    api: str, http: httpx.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    backends = [
        Backend(name="here", url="http://127.0.0.1:9/"),
        Backend(name="far", url="https://a.test/"),
    ]
    monkeypatch.setenv("TILEKEEPER_EGRESS_ALLOW_LOOPBACK", "false")
    refused = refused_backends(backends)
    assert list(refused) == ["here"] and LOOPBACK in refused["here"]

    def never(backend: Backend) -> Any:
        raise AssertionError(f"connected to {backend.name}")

    definition = CampaignDefinition(id="egress-fitness", backends=backends)
    links = {b.name: BackendLink(b, never) for b in backends}
    with caplog.at_level(logging.WARNING, logger="catalog_service.runner.wiring"):
        assert check_fitness(definition, links, refused) == refused
    assert f"back-end here gets no tiles: {refused['here']}" in caplog.text
    # A campaign none of whose back-ends may be reached does not run, and says why.
    monkeypatch.setenv("TILEKEEPER_EGRESS_ALLOW_LOOPBACK", "true")
    campaign = f"egress-{uuid.uuid4().hex[:8]}"
    body = {
        "id": campaign,
        "process": {"process_id": "p"},
        "backends": [{"name": "here", "url": "http://127.0.0.1:9/", "auth": "none"}],
    }
    assert http.post("/campaigns", json=body).status_code == 201
    monkeypatch.setenv("TILEKEEPER_EGRESS_ALLOW_LOOPBACK", "false")
    with pytest.raises(
        TilekeeperError, match=f"no back-end of the campaign can run it: here: .*{LOOPBACK}"
    ):
        build_manager(api, campaign, connect=never, harvest=False)


def test_a_backend_cannot_send_the_runner_to_a_refused_address(connections: list[Any]) -> None:
    capabilities = {
        "api_version": "1.2.0",
        "backend_version": "test",
        "stac_version": "1.0.0",
        "id": "evil",
        "title": "evil",
        "description": "a back-end that names a metadata service",
        "endpoints": [{"path": "/credentials/oidc", "methods": ["GET"]}],
        "links": [],
    }
    providers = {"providers": [{"id": "x", "title": "x", "issuer": "http://169.254.169.254/"}]}

    def backend(handler: BaseHTTPRequestHandler) -> None:
        if handler.path == "/moved/":
            redirect_to("http://[fd00:ec2::254]/")(handler)
        elif handler.path == "/credentials/oidc":
            send_json(handler, json.dumps(providers).encode())
        elif handler.path == "/":
            send_json(handler, json.dumps(capabilities).encode())
        else:
            send_json(handler, b'{"code": "NotFound", "message": "no"}', 404)

    hits = Hits()
    with loopback_server(hits.handler(backend)) as port:
        for path, why in (
            ("/", "http://169.254.169.254: a cloud metadata"),
            ("/moved/", "fd00:ec2::254"),
        ):
            with pytest.raises(
                BackendDown, match=rf"back-end evil: refused to fetch .*{re.escape(why)}"
            ):
                login(Backend(name="evil", url=f"http://127.0.0.1:{port}{path}", auth="oidc"))
    assert ("GET", "/credentials/oidc", f"127.0.0.1:{port}") in hits.seen
    assert {address[0] for address in connections} == {"127.0.0.1"}


@pytest.fixture()
def ingest_env(api: str, database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("TILEKEEPER_API_URL", api)
    monkeypatch.setenv("TILEKEEPER_PRODUCTS_STORE", str(products_settings(database).store))
    yield api


def test_ingest_of_an_item_whose_asset_leads_to_a_refused_host_fails(
    ingest_env: str, http: httpx.Client, connections: list[Any]
) -> None:
    def item(href: str) -> bytes:
        asset = {"href": href, "type": "image/tiff; application=geotiff"}
        return json.dumps({"type": "Feature", "id": "x", "assets": {"data": asset}}).encode()

    documents = {
        "/metadata.json": item("http://169.254.169.254/latest/x.tif"),
        "/private.json": item("http://10.0.0.1/x.tif"),
        "/collection.json": json.dumps(
            {
                "type": "Collection",
                "id": "c",
                "links": [{"rel": "item", "href": "http://[::]/i.json"}],
            }
        ).encode(),
    }

    def serve(handler: BaseHTTPRequestHandler) -> None:
        send_json(handler, documents[handler.path])

    hits = Hits()
    collection = f"products-egress-{uuid.uuid4().hex[:6]}"
    with loopback_server(hits.handler(serve)) as port:
        urls = [f"http://127.0.0.1:{port}{path}" for path in documents]
        result = CliRunner().invoke(
            app, ["ingest", *urls, "--collection", collection], env={"COLUMNS": "1000"}
        )
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    assert f"{urls[0]}: http://169.254.169.254/latest/x.tif: not downloaded: refused" in output
    assert "cloud metadata address, refused always" in output
    assert (
        f"http://10.0.0.1/x.tif: not downloaded: refused to fetch http://10.0.0.1: a private network: {PRIVATE}"
        in output
    )
    assert "http://[::]/i.json: not downloaded" in output and "unspecified address" in output
    assert sorted(path for _, path, _ in hits.seen) == sorted(documents)
    assert {address[0] for address in connections} == {"127.0.0.1"}
    assert http.get(f"/collections/{collection}").status_code == 404

"""The access matrix: every route of the app x every kind of caller x every kind of
target, against the real API, checked against ONE statement of the rules (`expected`).

The routes come from the app itself (`create_app(...)`, the same factory the server
runs), so a route added tomorrow is in the matrix without anybody listing it; it fails
loudly only if it has a path parameter nobody gave a value for (`path_values`).

For every (route, caller, target):
- no answer is a 5xx;
- the status is the one `expected` gives;
- for every caller who may not see a private campaign, the answer about the private
  campaign (or its products, or its product file) is byte for byte the answer about a
  campaign that does not exist, the id substituted: status, body and headers (but
  Date and Content-Length);
- refused writes leave the catalogue as it was (the shared campaigns are compared before
  and after); writes that succeed run on throw-away campaigns of their own.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from security_world import (
    FILE,
    TILE_GEOMETRY,
    WRITE_SCOPES,
    Answer,
    answer_of,
    bearer,
    campaign,
    differences,
    new_key,
    plain_collection,
    product_item,
    revoked_key,
    suffix,
    tile_address,
)
from support.database import Database, admin_token
from support.stac import make_collection, make_item

from catalog_service.api.app import create_app
from catalog_service.api.auth import api_routes
from catalog_service.settings import DatabaseSettings, ProductSettings

# --------------------------------------------------------------------------------------
# The routes: whatever the app has.


def app_routes() -> list[tuple[str, str]]:
    """(method, path template) of every APIRoute of the app, nested routers included."""
    app = create_app(
        db_settings=DatabaseSettings(dsn="postgresql://nobody@127.0.0.1:9/none"),
        products=ProductSettings(store="/nonexistent/products"),  # a local store: file routes
    )
    return api_routes(app)


ROUTES = app_routes()

# --------------------------------------------------------------------------------------
# Who calls.


class Kind(enum.Enum):
    ANONYMOUS = "no credential"
    INVALID = "a credential that is not valid"
    KEY = "a valid API key"


@dataclass(frozen=True)
class Caller:
    name: str
    kind: Kind
    scopes: frozenset[str] = frozenset()
    owner: bool = False  # an owner of the target campaigns

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def may(self, scope: str) -> bool:
        return scope in self.scopes or self.admin

    @property
    def sees_private(self) -> bool:
        """Owners and admins: the only callers for whom a private campaign exists."""
        return self.kind is Kind.KEY and (self.owner or self.admin)


CALLERS = [
    Caller("anonymous", Kind.ANONYMOUS),
    Caller("junk bearer", Kind.INVALID),  # Authorization: Bearer nonsense
    Caller("junk key", Kind.INVALID),  # X-API-Key: tk_nonsense
    Caller("revoked admin key", Kind.INVALID),
    Caller("stac:write key", Kind.KEY, frozenset({"stac:write"})),
    Caller("campaigns:write key", Kind.KEY, frozenset({"campaigns:write"})),
    Caller("products:write key", Kind.KEY, frozenset({"products:write"})),
    Caller("owner", Kind.KEY, frozenset(WRITE_SCOPES), owner=True),
    Caller("other tenant", Kind.KEY, frozenset(WRITE_SCOPES)),  # every write scope
    Caller("admin", Kind.KEY, frozenset({"admin"})),
]

# --------------------------------------------------------------------------------------
# What a route names.


@dataclass(frozen=True)
class Target:
    kind: str  # campaign | products (its X-products) | file (a product file) | plain | -
    state: str  # public | private | missing | -

    def __str__(self) -> str:
        return "nothing" if self.kind == "-" else f"{self.state} {self.kind}"


NOTHING = Target("-", "-")
STATES = ("public", "private", "missing")


def targets(path: str) -> list[Target]:
    if "{campaign_id}" in path:
        return [Target("campaign", s) for s in STATES]
    if "{collection_id}" in path:
        kinds = ("campaign", "products")
        return [Target(k, s) for k in kinds for s in STATES] + [Target("plain", "public")]
    if "{key" in path:
        return [Target("file", s) for s in STATES]
    return [NOTHING]


# --------------------------------------------------------------------------------------
# THE RULES.


class Outcome(enum.Enum):
    OK = "served (2xx/3xx)"
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    CONFLICT = 409


_SEARCHES = ("/search", "/aggregate", "/aggregations")  # POSTed, but reads
PRODUCTS_ROUTE = "/collections/{collection_id}/products"


def scope_of(method: str, path: str) -> str | None:
    """The scope a route needs; None for a read. STAC writes need stac:write, campaign
    routes campaigns:write, product routes (writing products, harvest state)
    products:write."""
    if method in ("GET", "HEAD") or (method == "POST" and path.endswith(_SEARCHES)):
        return None
    if method == "POST" and path.startswith(RASTER):  # a feature to read under
        return None
    if path == PRODUCTS_ROUTE or path.endswith("/product"):
        return "products:write"
    if path.startswith("/campaigns"):
        return "campaigns:write"
    return "stac:write"


def expected(method: str, path: str, caller: Caller, target: Target) -> Outcome:
    """What the service answers ``caller`` asking ``method path`` about ``target``."""
    scope = scope_of(method, path)
    # 1. A credential that is presented is checked, on every route, reads included.
    if caller.kind is Kind.INVALID:
        return Outcome.UNAUTHORIZED
    # 2. A write needs a credential (TILEKEEPER_API_REQUIRE_KEYS, on by default) with the
    #    route's scope (admin has every scope), whatever it names.
    if scope is not None:
        if caller.kind is Kind.ANONYMOUS:
            return Outcome.UNAUTHORIZED
        if not caller.may(scope):
            return Outcome.FORBIDDEN
    # 3. A private campaign, its products and their files exist for their owners and
    #    admins only: to everyone else, the very answer a missing one gets.
    if target.state == "missing" or (target.state == "private" and not caller.sees_private):
        return Outcome.NOT_FOUND
    # 4. Only its owners (or an admin) change a campaign and its products.
    if scope is not None and target.kind in ("campaign", "products") and not caller.sees_private:
        return Outcome.FORBIDDEN
    # 5. What the route refuses whoever asks: a campaign's collection and tiles change
    #    through the campaign routes only; products never go into a campaign's tiles; a
    #    plain collection takes products from those who may write STAC too.
    if target.kind == "campaign" and (scope == "stac:write" or path == PRODUCTS_ROUTE):
        return Outcome.CONFLICT
    if path == PRODUCTS_ROUTE and target.kind == "plain" and not caller.may("stac:write"):
        return Outcome.FORBIDDEN
    return Outcome.OK


# --------------------------------------------------------------------------------------
# How each route is called: path values, query strings, bodies.


def path_values(route_target: str, item: str) -> dict[str, str]:
    z, x, y = tile_address(4.1, 50.1, 10).split("/")
    return {
        "campaign_id": route_target,
        "collection_id": route_target,
        "key": route_target,
        "item_id": item,
        "tile_id": "T1",
        "worker": "w1",
        "z": z,
        "x": x,
        "y": y,
        # The raster service's: a point, a bbox, a size, a format, a tile matrix set.
        "lon": "4.1",
        "lat": "50.1",
        "minx": "4.0",
        "miny": "50.0",
        "maxx": "4.2",
        "maxy": "50.2",
        "width": "16",
        "height": "16",
        "format": "png",
        "tileMatrixSetId": "WebMercatorQuad",
    }


RASTER = "/raster/"
QUERIES = {
    ("GET", "/campaigns/{campaign_id}/jobs"): "status=not_started",
    ("GET", "/collections/{collection_id}/aggregate"): "aggregations=total_count",
    ("GET", "/aggregate"): "aggregations=total_count",
    ("DELETE", "/campaigns/{campaign_id}"): "products=true",
}


def _new(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# A body that the route accepts when the caller may write: a refusal then means the
# rule refused, not the body. (c: the collection or campaign the path names.)
BODIES: dict[tuple[str, str], Callable[[str], Any]] = {
    ("POST", "/search"): lambda c: {"limit": 1},
    ("POST", "/aggregate"): lambda c: {"aggregations": ["total_count"]},
    ("POST", "/collections/{collection_id}/aggregate"): lambda c: {"aggregations": ["total_count"]},
    ("POST", "/aggregations"): lambda c: None,
    ("POST", "/collections/{collection_id}/aggregations"): lambda c: None,
    ("POST", "/collections"): lambda c: make_collection(_new("made")),
    ("PUT", "/collections/{collection_id}"): lambda c: {**make_collection(c), "title": "put"},
    ("PATCH", "/collections/{collection_id}"): lambda c: {"title": "patched"},
    ("DELETE", "/collections/{collection_id}"): lambda c: None,
    ("POST", "/collections/{collection_id}/items"): lambda c: make_item(_new("n"), c),
    ("PUT", "/collections/{collection_id}/items/{item_id}"): lambda c: make_item("P1", c),
    ("PATCH", "/collections/{collection_id}/items/{item_id}"): lambda c: {
        "properties": {"note": "patched"}
    },
    ("DELETE", "/collections/{collection_id}/items/{item_id}"): lambda c: None,
    ("POST", "/collections/{collection_id}/bulk_items"): lambda c: {
        "method": "upsert",
        "items": {"B1": make_item("B1", c)},
    },
    ("POST", PRODUCTS_ROUTE): lambda c: {"writes": [{"items": [product_item("P2", c)]}]},
    ("POST", "/campaigns"): lambda c: {"id": _new("made"), "grid": "utm-20km"},
    ("PATCH", "/campaigns/{campaign_id}"): lambda c: {"title": "patched"},
    ("DELETE", "/campaigns/{campaign_id}"): lambda c: None,
    ("POST", "/campaigns/{campaign_id}/tiles"): lambda c: {
        "tiles": [{"id": "T2", "geometry": TILE_GEOMETRY}]
    },
    ("POST", "/campaigns/{campaign_id}/jobs/changes"): lambda c: {
        "changes": [{"tile": "T1", "status": "queued_for_start"}]
    },
    ("PUT", "/campaigns/{campaign_id}/workers/{worker}"): lambda c: {"lease_s": 30},
    ("DELETE", "/campaigns/{campaign_id}/workers/{worker}"): lambda c: None,
    ("POST", "/campaigns/{campaign_id}/workers/{worker}/claim"): lambda c: {
        "statuses": ["not_started"],
        "limit": 1,
        "lease_s": 30,
    },
    ("POST", "/campaigns/{campaign_id}/reset"): lambda c: {},
    ("PUT", "/campaigns/{campaign_id}/jobs/{tile_id}/product"): lambda c: {"state": "pending"},
}


# --------------------------------------------------------------------------------------
# The world the matrix runs against.


@dataclass
class World:
    api: str
    database: Database
    tokens: dict[str, str | None]  # caller name -> its token
    headers: dict[str, dict[str, str]]  # caller name -> its headers
    campaigns: dict[str, str]  # public/private/missing -> campaign id
    plain: str

    def target_id(self, target: Target, campaigns: dict[str, str] | None = None) -> str:
        ids = campaigns or self.campaigns
        if target.kind == "campaign":
            return ids[target.state]
        if target.kind == "products":
            return f"{ids[target.state]}-products"
        if target.kind == "file":
            return f"{ids[target.state]}-products/{FILE}"
        if target.kind == "plain":
            return (campaigns or {}).get("plain", self.plain)
        return ""

    def shared_ids(self) -> list[str]:
        found = [self.plain]
        for c in self.campaigns.values():
            found += [c, f"{c}-products"]
        return found


@pytest.fixture(scope="module")
def world(api: str, database: Database) -> Iterator[World]:
    s = suffix()
    owner = new_key(database, f"owner-{s}", WRITE_SCOPES)
    tokens: dict[str, str | None] = {
        "anonymous": None,
        "junk bearer": "nonsense",
        "junk key": "tk_nonsense",
        "revoked admin key": revoked_key(database, f"revoked-{s}"),
        "stac:write key": new_key(database, f"stac-{s}", ["stac:write"]),
        "campaigns:write key": new_key(database, f"campaigns-{s}", ["campaigns:write"]),
        "products:write key": new_key(database, f"products-{s}", ["products:write"]),
        "owner": owner,
        "other tenant": new_key(database, f"other-{s}", WRITE_SCOPES),
        "admin": admin_token(database),
    }
    assert set(tokens) == {c.name for c in CALLERS}
    # Same length ids: the private and the missing answers differ by the id only.
    ids = {"public": f"pub-{s}", "private": f"sec-{s}", "missing": f"mis-{s}"}
    with httpx.Client(base_url=api, timeout=60) as http:
        campaign(http, database, owner, ids["public"], "public")
        campaign(http, database, owner, ids["private"], "private")
        plain_collection(http, owner, f"pln-{s}")
    headers = {name: bearer(token) for name, token in tokens.items()}
    headers["junk key"] = {"X-API-Key": "tk_nonsense"}  # the other way to send a key
    yield World(api, database, tokens, headers, ids, f"pln-{s}")
    # Gone again: a hundred throwaway campaigns would fill the pages others look at
    # (STAC Browser shows the first pages of /collections).
    admin = bearer(admin_token(database))
    ours = ("tpu-", "tse-", "tpl-", f"pub-{s}", f"sec-{s}", f"pln-{s}")
    with httpx.Client(base_url=api, timeout=60, headers=admin) as http:
        listed = http.get("/campaigns", params={"f": "json"}).json()["campaigns"]
        for found in listed:
            if found["id"].startswith(ours):
                http.delete(f"/campaigns/{found['id']}", params={"products": "true"})
        for plain in [*sql_ids(database, "tpl-%"), f"pln-{s}"]:
            http.delete(f"/collections/{plain}")


def sql_ids(database: Database, pattern: str) -> list[str]:
    return [row[0] for row in database.sql("SELECT id FROM collections WHERE id LIKE %s", pattern)]


def throwaway(http: httpx.Client, world: World, target: Target) -> dict[str, str]:
    """Fresh campaigns (or a plain collection) for a write that will succeed."""
    s = suffix()
    owner = world.tokens["owner"]
    assert owner is not None
    if target.kind == "plain":
        plain_collection(http, owner, f"tpl-{s}")
        return {"plain": f"tpl-{s}"}
    if target.kind == "-":
        return {}
    ids = {"public": f"tpu-{s}", "private": f"tse-{s}", "missing": f"tmi-{s}"}
    campaign(http, world.database, owner, ids[target.state], target.state)
    return ids


def snapshot(world: World) -> list[Any]:
    """The shared campaigns as stored: collections, items, job history, workers."""
    ids = world.shared_ids()
    sql = world.database.sql
    return [
        sql("SELECT id, md5(content::text) FROM collections WHERE id = ANY(%s) ORDER BY 1", ids),
        sql(
            "SELECT collection, id, md5(content::text) FROM items WHERE collection = ANY(%s) "
            "ORDER BY 1, 2",
            ids,
        ),
        sql(
            "SELECT collection, count(*) FROM tilekeeper.job_history WHERE collection = ANY(%s) "
            "GROUP BY 1 ORDER BY 1",
            ids,
        ),
        sql(
            "SELECT collection, worker FROM tilekeeper.workers WHERE collection = ANY(%s) "
            "ORDER BY 1, 2",
            ids,
        ),
    ]


# --------------------------------------------------------------------------------------
# Asking and judging.


def ask(
    http: httpx.Client,
    world: World,
    method: str,
    path: str,
    caller: Caller,
    target: Target,
    campaigns: dict[str, str] | None = None,
) -> Answer:
    named = world.target_id(target, campaigns)
    item = "T1" if target.kind == "campaign" else "P1"
    values = path_values(named, item)
    url = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values[m.group(1)], path)
    query = QUERIES.get((method, path))
    if path.startswith(RASTER):
        query = "assets=data"
    if query:
        url = f"{url}?{query}"
    body: Callable[[str], Any] = BODIES.get(
        (method, path), lambda c: {} if method in ("POST", "PUT", "PATCH") else None
    )
    payload = body(named)
    if path.startswith(RASTER) and method == "POST":
        payload = {"type": "Feature", "properties": {}, "geometry": TILE_GEOMETRY}
    response = http.request(
        method,
        url,
        headers=world.headers[caller.name],
        **({"json": payload} if payload is not None else {}),
    )
    return answer_of(f"{method} {url}", response)


def verdict(answer: Answer, want: Outcome, lenient: bool) -> str | None:
    """None when ``answer`` is what the rules expect; else what is wrong."""
    status = answer.status
    if status >= 500:
        return f"a server error {status}"
    raster = answer.request.split(" ", 1)[-1].split("?")[0]
    lenient_statuses = (400, 404, 409, 422) if RASTER in raster else (400, 409, 422)
    if want is Outcome.OK:
        if 200 <= status < 400 or (lenient and status in lenient_statuses):
            return None
        return f"expected it served, got {status}"
    if status != want.value:
        return f"expected {want.value}, got {status}"
    return None


def describe(answer: Answer, caller: Caller, target: Target, problem: str) -> str:
    return f"{answer.request} as {caller.name} on the {target}: {problem} ({answer.body[:200]!r})"


# --------------------------------------------------------------------------------------
# The tests.


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_route_answers_every_caller_as_the_rules_say(world: World, method: str, path: str) -> None:
    failures: list[str] = []
    writes = scope_of(method, path) is not None
    lenient = writes and (method, path) not in BODIES  # a new route: no body known yet
    # The world's products are not rasters (test_raster.py draws real ones): a raster
    # route says so (400 or 404), which is "served" here; hidden still equals missing.
    lenient = lenient or path.startswith(RASTER)
    answers: dict[tuple[str, Target], Answer] = {}
    later: list[tuple[Caller, Target]] = []
    before = snapshot(world)
    with httpx.Client(base_url=world.api, timeout=60, follow_redirects=False) as http:
        # Reads, and writes that must be refused, on the shared campaigns.
        for caller in CALLERS:
            for target in targets(path):
                want = expected(method, path, caller, target)
                if writes and want is Outcome.OK:
                    later.append((caller, target))
                    continue
                answer = ask(http, world, method, path, caller, target)
                answers[(caller.name, target)] = answer
                problem = verdict(answer, want, lenient)
                if problem:
                    failures.append(describe(answer, caller, target, problem))
        # Whoever may not see the private campaign gets what a missing one gets.
        for caller in CALLERS:
            if caller.sees_private:
                continue
            for kind in sorted({t.kind for t in targets(path)} - {"-", "plain"}):
                hidden = answers[(caller.name, Target(kind, "private"))]
                missing = answers[(caller.name, Target(kind, "missing"))]
                problem = differences(
                    hidden, missing, {world.campaigns["private"]: world.campaigns["missing"]}
                )
                if problem:
                    failures.append(
                        f"{hidden.request} as {caller.name} differs from {missing.request}: "
                        f"{problem}"
                    )
        after = snapshot(world)
        if after != before:
            failures.append(f"refused requests changed the catalogue: {before} -> {after}")
        # Writes that succeed, each on throw-away campaigns of its own.
        for caller, target in later:
            own = throwaway(http, world, target)
            answer = ask(http, world, method, path, caller, target, own)
            problem = verdict(answer, Outcome.OK, lenient)
            if problem:
                failures.append(describe(answer, caller, target, problem))
    assert not failures, f"{len(failures)} answers break the rules:\n" + "\n".join(failures)


def test_the_matrix_has_every_operation_of_the_live_service(api: str) -> None:
    """The routes above come from a fresh app: the one the server runs has no other."""
    document = httpx.get(f"{api}/api", timeout=30).json()
    live = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method.upper() in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    }
    known = {(m, re.sub(r"\{(\w+):\w+\}", r"{\1}", p)) for m, p in ROUTES}  # {key:path}
    assert live <= known, live - known
    assert len(ROUTES) > 50  # nested routers were walked, not only the app's own routes

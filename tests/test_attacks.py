"""The attacks of issue 21, one regression test per class, against the real API.

Callers: anonymous; a narrow key (one scope); another tenant (every write scope, owner
of nothing here); the owner (every write scope) and the admin key. Targets: a public
campaign, a private one (each with a tile, a product and its file), and a campaign
that does not exist. "Hidden" must answer exactly what "missing" answers: status,
body and headers, the id substituted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from security_world import (
    FILE,
    WRITE_SCOPES,
    Answer,
    answer_of,
    bearer,
    campaign,
    differences,
    new_key,
    plain_collection,
    product_item,
    raw_request,
    store_dir,
    suffix,
)
from support.database import Database, admin_token
from support.stac import make_collection

SECRET = "T0KEN-s3cr3t"
WEBHOOK = f"https://hooks.example.com:8443/services/{SECRET}?key={SECRET}"
SHOWN_WEBHOOK = "https://hooks.example.com/(hidden)"


@dataclass
class World:
    api: str
    database: Database
    s: str
    owner: str
    other: str  # another tenant: every write scope, owns nothing here
    products_key: str  # products:write only, owns nothing here
    campaigns_key: str  # campaigns:write only, owns nothing here
    admin: str
    public: str
    private: str
    missing: str
    plain: str  # a plain collection (no campaign)

    def callers(self) -> dict[str, str | None]:
        """Who may not see the private campaign."""
        return {
            "anonymous": None,
            "products:write key": self.products_key,
            "campaigns:write key": self.campaigns_key,
            "other tenant": self.other,
        }


@pytest.fixture(scope="module")
def world(api: str, database: Database) -> World:
    s = suffix()
    owner = new_key(database, f"owner-{s}", WRITE_SCOPES)
    other = new_key(database, f"other-{s}", WRITE_SCOPES)
    hooks: dict[str, Any] = {"notify": {"webhooks": [WEBHOOK]}}
    with httpx.Client(base_url=api, timeout=60) as http:
        campaign(http, database, owner, f"pub-{s}", "public", **hooks)
        campaign(http, database, owner, f"sec-{s}", "private", **hooks)
        plain_collection(http, admin_token(database), f"pln-{s}")
    return World(
        api=api,
        database=database,
        s=s,
        owner=owner,
        other=other,
        products_key=new_key(database, f"products-{s}", ["products:write"]),
        campaigns_key=new_key(database, f"campaigns-{s}", ["campaigns:write"]),
        admin=admin_token(database),
        public=f"pub-{s}",
        private=f"sec-{s}",
        missing=f"mis-{s}",  # as long as the private id: answers differ by the id only
        plain=f"pln-{s}",
    )


@pytest.fixture()
def client(world: World) -> Iterator[httpx.Client]:
    """A client without credentials (each request says whose it is)."""
    with httpx.Client(base_url=world.api, timeout=60) as anonymous:
        yield anonymous


def _stored(world: World, *collections: str) -> list[Any]:
    """Collections and items as stored (to show a refused write changed nothing)."""
    ids = list(collections)
    sql = world.database.sql
    return [
        sql("SELECT id, md5(content::text) FROM collections WHERE id = ANY(%s) ORDER BY 1", ids),
        sql(
            "SELECT collection, id, md5(content::text) FROM items WHERE collection = ANY(%s) "
            "ORDER BY 1, 2",
            ids,
        ),
    ]


def _same(hidden: Answer, missing: Answer, world: World, **more: str) -> None:
    problem = differences(hidden, missing, {world.private: world.missing, **more})
    assert problem is None, f"{hidden.request} vs {missing.request}: {problem}"


# -- 2. Product-file traversal ----------------------------------------------------------

# Ways to spell a product file's key ({p}: the product collection, {root}: the store's
# absolute path), with what its owner gets: 200 where the spelling leads to the file.
TRAVERSALS = [
    ("{p}/P1/x.tif", 200),
    # Names the file system refuses: 404 like any missing file, never a 5xx.
    ("{p}/P1/%00", 404),
    ("{p}/P1/" + "n" * 300, 404),
    ("./{p}/P1/x.tif", 200),
    ("x/../{p}/P1/x.tif", 200),
    ("%2e/{p}/P1/x.tif", 200),
    ("%2E/{p}/P1/x.tif", 200),
    ("x/%2e%2e/{p}/P1/x.tif", 200),
    ("%2e%2e/products/{p}/P1/x.tif", 200),  # out of the store and back in
    ("{p}/./P1/x.tif", 200),
    ("{p}/P1/../P1/x.tif", 200),
    ("{p}//P1/x.tif", 200),
    ("{p}%2FP1%2Fx.tif", 200),
    ("%2e%2f{p}%2fP1%2fx.tif", 200),
    ("{root}/{p}/P1/x.tif", 200),  # an absolute path into the store
    ("{root}/x/../{p}/P1/x.tif", 200),
    ("/{p}/P1/x.tif", 404),  # an absolute path outside the store
    ("{p}/P1/x.tif/", 200),
    ("%2e%2e/%2e%2e/{p}/P1/x.tif", 404),
    ("{p}/.staging/../P1/x.tif", 200),
]


@pytest.mark.parametrize(("spelling", "owner_gets"), TRAVERSALS, ids=[t[0] for t in TRAVERSALS])
def test_no_spelling_of_a_file_key_reaches_a_private_campaigns_file(
    world: World, spelling: str, owner_gets: int
) -> None:
    root = str(store_dir(world.database).resolve())
    assert root.endswith("/products")  # the `%2e%2e/products/` spelling relies on it

    def path(campaign_id: str) -> str:
        return "/products/files/" + spelling.format(p=f"{campaign_id}-products", root=root)

    for method in ("GET", "HEAD"):
        seen = raw_request(world.api, method, path(world.private), bearer(world.owner))
        assert seen.status == owner_gets, (seen.request, seen.status, seen.body[:200])
        for token in world.callers().values():
            hidden = raw_request(world.api, method, path(world.private), bearer(token))
            missing = raw_request(world.api, method, path(world.missing), bearer(token))
            assert hidden.status == 404, (hidden.request, hidden.status)
            _same(hidden, missing, world)


def test_the_files_of_a_deleted_private_campaign_stay_private(
    world: World, client: httpx.Client
) -> None:
    """Deleting a campaign with ?products=true removes its product records and its local
    files: they must not become everybody's, nor a later campaign's of the same id."""
    gone, missing = f"del-{world.s}", f"dmi-{world.s}"
    campaign(client, world.database, world.owner, gone, "private")
    deleted = client.delete(f"/campaigns/{gone}?products=true", headers=bearer(world.owner))
    assert deleted.status_code == 204, deleted.text
    assert not (store_dir(world.database) / f"{gone}-products").exists()
    for token in world.callers().values():
        hidden = raw_request(world.api, "GET", f"/products/files/{gone}-products/{FILE}", bearer(token))  # fmt: skip
        absent = raw_request(world.api, "GET", f"/products/files/{missing}-products/{FILE}", bearer(token))  # fmt: skip
        problem = differences(hidden, absent, {gone: missing})
        assert problem is None, f"{hidden.request}: {problem}"


# -- 4. Scopes and ownership: a products:write key -------------------------------------


def _write(items: list[dict[str, Any]], job: dict[str, str] | None = None) -> dict[str, Any]:
    return {"writes": [{"items": items, **({"job": job} if job else {})}]}


def test_a_products_key_writes_only_into_product_collections_of_its_campaigns(
    world: World, client: httpx.Client
) -> None:
    w = world
    before = _stored(w, w.plain, w.public, f"{w.public}-products", w.private, f"{w.private}-products")  # fmt: skip
    refused = {
        # Another collection: a plain collection also needs stac:write.
        (w.products_key, w.plain): 403,
        # A campaign's tile items: never (409 for its owner, 403 for anybody else).
        (w.owner, w.public): 409,
        (w.products_key, w.public): 403,
        (w.other, w.public): 403,
        # Another user's campaign's products.
        (w.products_key, f"{w.public}-products"): 403,
        (w.other, f"{w.public}-products"): 403,
    }
    for (token, target), status in refused.items():
        body = _write([product_item("EVIL", target)])
        answer = client.post(f"/collections/{target}/products", json=body, headers=bearer(token))
        assert answer.status_code == status, (token == w.owner, target, answer.text)
    # Another user's private campaign: as if it did not exist.
    for token in (w.products_key, w.other):
        answers = [
            answer_of(
                target,
                client.post(
                    f"/collections/{target}-products/products",
                    json=_write([product_item("EVIL", f"{target}-products")]),
                    headers=bearer(token),
                ),
            )
            for target in (w.private, w.missing)
        ]
        assert answers[0].status == 404
        _same(answers[0], answers[1], world)
    assert _stored(w, w.plain, w.public, f"{w.public}-products", w.private, f"{w.private}-products") == before  # fmt: skip


def test_product_back_links_go_only_to_the_callers_campaigns(
    world: World, client: httpx.Client
) -> None:
    """The other tenant writes into a collection of its own, but marks someone else's
    tile as harvested: refused, and nothing of the write is stored."""
    w = world
    own = f"oth-{w.s}"
    campaign(client, w.database, w.other, own, "public")
    mine = f"{own}-products"
    before = _stored(w, w.public, w.private, mine)
    answer = client.post(
        f"/collections/{mine}/products",
        json=_write([product_item("P9", mine)], {"campaign": w.public, "tile": "T1"}),
        headers=bearer(w.other),
    )
    assert answer.status_code == 403, answer.text
    hidden, missing = (
        answer_of(
            target,
            client.post(
                f"/collections/{mine}/products",
                json=_write([product_item("P9", mine)], {"campaign": target, "tile": "T1"}),
                headers=bearer(w.other),
            ),
        )
        for target in (w.private, w.missing)
    )
    assert hidden.status == 404
    _same(hidden, missing, world)
    # The harvest state of someone else's tile.
    state = client.put(
        f"/campaigns/{w.public}/jobs/T1/product", json={"state": "failed"}, headers=bearer(w.other)
    )
    assert state.status_code == 403, state.text
    assert _stored(w, w.public, w.private, mine) == before


# -- 4. Scopes and ownership: campaigns:write on someone else's public campaign ---------


@pytest.mark.parametrize(
    "patch",
    [
        {"visibility": "private"},
        {"owners": ["key:mallory"]},
        {"backends": [{"name": "evil", "url": "https://evil.example.com/openeo"}]},
        {"notify": {"webhooks": ["https://evil.example.com/hook"]}},
        {"process": {"process_id": "evil", "namespace": "https://evil.example.com/udp.json"}},
        {"title": "defaced"},
    ],
    ids=lambda p: next(iter(p)),
)
def test_a_non_owner_cannot_change_a_public_campaign(
    world: World, client: httpx.Client, patch: dict[str, Any]
) -> None:
    w = world
    before = _stored(w, w.public)
    shown = client.get(f"/campaigns/{w.public}", headers=bearer(w.admin)).json()
    for token in (w.campaigns_key, w.other):
        answer = client.patch(f"/campaigns/{w.public}", json=patch, headers=bearer(token))
        assert answer.status_code == 403, answer.text
    assert _stored(w, w.public) == before
    assert client.get(f"/campaigns/{w.public}", headers=bearer(w.admin)).json() == shown


def test_a_json_patch_cannot_move_a_collection_onto_another(
    world: World, client: httpx.Client
) -> None:
    """Found by an outside tester: a JSON Patch replacing /id wrote the patched document
    under the new id, over a private campaign (exposing its tiles and files) or anyone's."""
    w = world
    mine = f"mine-{w.s}"
    plain_made = client.post(
        "/collections",
        json={
            "id": mine,
            "type": "Collection",
            "stac_version": "1.1.0",
            "description": "x",
            "license": "other",
            "extent": {
                "spatial": {"bbox": [[0, 0, 1, 1]]},
                "temporal": {"interval": [[None, None]]},
            },
            "links": [],
        },
        headers=bearer(w.other),
    )
    assert plain_made.status_code == 201, plain_made.text
    targets = [w.private, f"{w.private}-products", w.public, f"{w.public}-products", w.plain]
    before = _stored(w, *targets)
    patches: list[list[dict[str, Any]]] = [
        [{"op": "replace", "path": "/id", "value": target} for target in targets],
        [{"op": "copy", "from": "/description", "path": "/id"}],
        [{"op": "replace", "path": "", "value": {"id": w.public}}],
    ]
    json_patch = {"Content-Type": "application/json-patch+json"}
    for token in (w.other, w.admin):
        for ops in patches:
            for op in ops:
                answer = client.patch(
                    f"/collections/{mine}", json=[op], headers={**bearer(token), **json_patch}
                )
                assert answer.status_code == 400, (op, answer.text)
    assert _stored(w, *targets) == before
    assert client.get(f"/collections/{mine}").status_code == 200


# -- 4. X-products squatting, both ways -------------------------------------------------


def test_nobody_but_its_owners_creates_a_campaigns_product_collection(
    world: World, client: httpx.Client
) -> None:
    w = world
    public, private = f"pbq-{w.s}", f"sbq-{w.s}"  # campaigns without products yet
    missing = f"mbq-{w.s}"
    campaign(client, w.database, w.owner, public, "public", products=False)
    campaign(client, w.database, w.owner, private, "private", products=False)
    # Somebody else's public campaign: refused.
    squat = client.post("/collections", json=make_collection(f"{public}-products"), headers=bearer(w.other))  # fmt: skip
    assert squat.status_code == 400, squat.text
    # A hidden campaign and a missing one: the same refusal.
    hidden, absent = (
        answer_of(
            c,
            client.post(
                "/collections", json=make_collection(f"{c}-products"), headers=bearer(w.other)
            ),
        )
        for c in (private, missing)
    )
    assert absent.status == 400, absent.body
    problem = differences(hidden, absent, {private: missing})
    assert problem is None, problem
    # Not even an admin, for a campaign that does not exist (nobody would own it).
    orphan = client.post("/collections", json=make_collection(f"{missing}-products"), headers=bearer(w.admin))  # fmt: skip
    assert orphan.status_code == 400, orphan.text
    # Nor by PUT (which creates nothing) or by an item write.
    squatted = f"{missing}-products"
    put = client.put(f"/collections/{squatted}", json=make_collection(squatted), headers=bearer(w.other))  # fmt: skip
    assert put.status_code == 404, put.text
    item = client.post(f"/collections/{squatted}/items", json=product_item("X", squatted), headers=bearer(w.other))  # fmt: skip
    assert item.status_code == 404, item.text
    found = w.database.sql(
        "SELECT id FROM collections WHERE id = ANY(%s)",
        [f"{c}-products" for c in (public, private, missing)],
    )
    assert found == []
    # Its owner may.
    made = client.post("/collections", json=make_collection(f"{public}-products"), headers=bearer(w.owner))  # fmt: skip
    assert made.status_code == 201, made.text


def test_nobody_creates_a_campaign_whose_product_collection_exists(
    world: World, client: httpx.Client
) -> None:
    """The other way round: a campaign named after an existing X-products' X would own
    products it did not make."""
    w = world
    left = f"lft-{w.s}"
    campaign(client, w.database, w.owner, left, "public")
    # The campaign's collection goes (as it did before campaign deletion removed its
    # products); its product collection stays.
    w.database.sql("SELECT pgstac.delete_collection(%s)", left)
    taken = client.post(
        "/campaigns", json={"id": left, "grid": "utm-20km"}, headers=bearer(w.other)
    )
    assert taken.status_code == 409, taken.text
    assert w.database.sql("SELECT id FROM collections WHERE id = %s", left) == []
    # And no campaign id ends with -products.
    for token in (w.other, w.admin):
        named = client.post("/campaigns", json={"id": f"{w.public}-products", "grid": "utm-20km"}, headers=bearer(token))  # fmt: skip
        assert named.status_code == 400, named.text


# -- 5. Private reads: collection search counts --------------------------------------------


def _matched(http: httpx.Client, token: str | None, **params: str) -> int:
    answer = http.get("/collections", params=params, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    return int(answer.json()["numberMatched"])


def test_collection_search_counts_no_hidden_collection(world: World, client: httpx.Client) -> None:
    w = world
    like_private = {"filter": f"id LIKE '{w.private}%'"}
    like_json = {
        "filter-lang": "cql2-json",
        "filter": json.dumps({"op": "like", "args": [{"property": "id"}, f"{w.private}%"]}),
    }
    ours = [w.public, f"{w.public}-products", w.private, f"{w.private}-products", w.plain]
    everything = {"filter": "id IN (" + ", ".join(f"'{c}'" for c in ours) + ")"}
    assert _matched(client, w.owner, **like_private) == 2  # sec and sec-products
    assert _matched(client, w.owner, **everything) == 5
    for token in w.callers().values():
        assert _matched(client, token, **like_private) == 0
        assert _matched(client, token, **like_json) == 0
        for prefix in ("s", "se", "sec", f"{w.private[:6]}"):
            bit = {"filter": f"id LIKE '{prefix}%' AND id LIKE '%-{w.s}%'"}
            assert _matched(client, token, **bit) == 0, prefix
        assert _matched(client, token, **everything) == 3
        assert _matched(client, token, **everything, limit="1") == 3  # counted, not returned
        # Items: searches and counts skip the hidden collections too.
        found = client.get("/search", params={"filter": f"collection LIKE '{w.private}%'"}, headers=bearer(token))  # fmt: skip
        assert found.status_code == 200 and found.json()["features"] == [], found.text
        counted = client.get(
            "/aggregate",
            params={"aggregations": "total_count", "filter": f"collection LIKE '{w.private}%'"},
            headers=bearer(token),
        )
        assert counted.json()["aggregations"][0]["value"] == 0, counted.text


# -- 5. Private reads: paging tokens ---------------------------------------------------------


def _token(direction: str, collection: str, item: str, hexed: bool) -> str:
    if hexed:  # pgstac 0.10's form: <direction>:<hex collection>:<hex id>
        return f"{direction}:{collection.encode().hex()}:{item.encode().hex()}"
    return f"{direction}:{collection}:{item}"


@pytest.mark.parametrize("hexed", [True, False], ids=["hex", "plain"])
@pytest.mark.parametrize("route", ["/search", "/collections/{public}/items"])
def test_a_paging_token_tells_nothing_about_a_hidden_item(
    world: World, client: httpx.Client, route: str, hexed: bool
) -> None:
    w = world
    path = route.format(public=w.public)
    subs = {w.private.encode().hex(): w.missing.encode().hex()}
    for token in (None, w.other):
        for direction in ("next", "prev"):
            hidden, missing = (
                answer_of(
                    f"GET {path}?token={_token(direction, c, 'T1', hexed)}",
                    client.get(
                        path,
                        params={"token": _token(direction, c, "T1", hexed), "limit": 1},
                        headers=bearer(token),
                    ),
                )
                for c in (w.private, w.missing)
            )
            problem = differences(hidden, missing, {w.private: w.missing, **subs})
            assert problem is None, f"{hidden.request} as {'anonymous' if token is None else 'other tenant'}: {problem}"  # fmt: skip


# -- 5. Private reads: webhook secrets ---------------------------------------------------------


def _webhooks_read(http: httpx.Client, world: World, token: str | None) -> list[tuple[str, Any]]:
    """Every place a caller reads the public campaign's definition: (where, webhooks)."""
    w = world
    found: list[tuple[str, Any]] = []
    campaign_ = http.get(f"/campaigns/{w.public}", headers=bearer(token)).json()
    found.append(("/campaigns/{id}", campaign_["notify"]["webhooks"]))
    listed = http.get("/campaigns", params={"f": "json"}, headers=bearer(token)).json()
    found += [("/campaigns", c["notify"]["webhooks"]) for c in listed["campaigns"] if c["id"] == w.public]  # fmt: skip
    collection = http.get(f"/collections/{w.public}", headers=bearer(token)).json()
    found.append(("/collections/{id}", collection["tilekeeper:campaign"]["notify"]["webhooks"]))
    for params in (
        {"filter": f"id = '{w.public}'"},
        {"filter": f"id = '{w.public}'", "fields": "id,tilekeeper:campaign"},
        {"q": w.public},
    ):
        page = http.get("/collections", params=params, headers=bearer(token)).json()
        found += [
            (f"/collections?{'&'.join(params)}", c["tilekeeper:campaign"]["notify"]["webhooks"])
            for c in page["collections"]
            if c["id"] == w.public
        ]
    return found


def test_webhook_urls_are_shown_to_owners_and_admins_only(
    world: World, client: httpx.Client
) -> None:
    w = world
    token: str | None
    for token in (w.owner, w.admin):
        read = _webhooks_read(client, w, token)
        assert len(read) >= 5 and all(hooks == [WEBHOOK] for _, hooks in read), read
    for token in w.callers().values():
        read = _webhooks_read(client, w, token)
        assert len(read) >= 5 and all(hooks == [SHOWN_WEBHOOK] for _, hooks in read), read
        for path in (f"/campaigns/{w.public}", "/campaigns?f=json", "/campaigns", f"/collections/{w.public}", "/collections?limit=1000", f"/campaigns/{w.public}/map"):  # fmt: skip
            body = client.get(path, headers={**bearer(token), "Accept": "text/html"}).text
            assert SECRET not in body, path


def test_webhook_urls_cannot_be_searched_for_by_others(world: World, client: httpx.Client) -> None:
    """A filter on the redacted field would give it away, a character at a time."""
    w = world
    field = '"tilekeeper:campaign.notify.webhooks"'
    # (a guess that is right, the same guess wrong): their counts must not differ.
    probes = [
        (f"%{SECRET}%", "%not-the-secret%"),
        (f"%/services/{SECRET[:1]}%", "%/services/Q%"),  # the first character ...
        (f"%/services/{SECRET[:2]}%", f"%/services/{SECRET[:1]}Q%"),  # ... the second
    ]
    for right, wrong in probes:
        for token in w.callers().values():
            answers = [
                client.get(
                    "/collections",
                    params={"filter": f"id = '{w.public}' AND {field} LIKE '{guess}'"},
                    headers=bearer(token),
                )
                for guess in (right, wrong)
            ]
            # Refused alike (400), or counted alike: either way nothing is learnt.
            assert [a.status_code for a in answers] in ([400, 400], [200, 200]), right
            counts = [a.json().get("numberMatched") for a in answers]
            assert counts[0] == counts[1], (right, counts)


def test_webhook_urls_do_not_order_others_searches(world: World, client: httpx.Client) -> None:
    """Sorting by the redacted field would give it away too: by where a campaign lands
    among the caller's own, whose webhooks the caller chooses."""
    w = world
    low, high = f"wla-{w.s}", f"wlz-{w.s}"
    for cid, secret in ((low, "AAAA"), (high, "ZZZZ")):
        hooks = {"notify": {"webhooks": [f"https://hooks.example.com/services/{secret}"]}}
        campaign(client, w.database, w.owner, cid, "public", products=False, **hooks)
    field = "tilekeeper:campaign.notify.webhooks"
    for token in w.callers().values():
        orders = []
        for sortby in (field, f"-{field}"):
            page = client.get(
                "/collections",
                params={"filter": f"id IN ('{low}', '{high}')", "sortby": sortby, "fields": "id"},
                headers=bearer(token),
            )
            if page.status_code == 400:  # refusing the sort tells nothing either
                continue
            assert page.status_code == 200, page.text
            orders.append([c["id"] for c in page.json()["collections"]])
        assert len(orders) < 2 or orders[0] == orders[1], orders

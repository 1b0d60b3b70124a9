"""The campaign map: its page, the vector tiles it draws and the feed of changes it polls.
Its libraries (OpenLayers, Natural Earth outlines) come from npm via web/map, served from
this service, so the page works without internet.

The pages here are made from catalogue values (campaign ids and titles) and the request's
URL: every one goes into the HTML through ``html.escape`` (text and attributes alike),
and the map's configuration is a data- attribute that map.js reads, not an inline script
(the pages' Content-Security-Policy runs none)."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from catalog_service.ids import campaign_products_id
from catalog_service.jobs import mapview
from catalog_service.jobs.campaign import CampaignDefinition
from catalog_service.jobs.mapview import STATUS_COLOURS
from catalog_service.raster.render import TMS, mosaic_base, mosaic_links

STATIC = Path(__file__).parent / "static"
# Where scripts/build_web.sh installs the map's libraries in a checkout.
VENDOR = Path(__file__).resolve().parents[2] / "web" / "map" / "node_modules"
MVT_TYPE = "application/vnd.mapbox-vector-tile"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}: campaign map</title>
<link rel="stylesheet" href="{root}static/vendor/ol/ol.css">
<link rel="stylesheet" href="{root}static/map/map.css">
</head><body><div id="app" data-config="{config}"><div id="map"></div><div id="panel">
<h1 id="title">{title}</h1><div class="muted" id="updated">loading…</div>
<h2>Tiles</h2><div id="counts"></div><div id="figures"></div>
<h2>Back-ends</h2><div id="backends"></div>
<h2>Legend</h2><div id="legend"></div>
<label><input type="checkbox" id="mosaic" checked> products (mosaic)</label>
<div id="tile"><p class="muted">Click a tile for its job, history and product.</p></div>
<p class="muted"><a href="{browser}">this campaign in STAC Browser</a></p>
</div></div>
<script src="{root}static/vendor/ol/dist/ol.js"></script>
<script src="{root}static/map/map.js"></script>
</body></html>
"""


LIST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Campaigns</title>
<link rel="stylesheet" href="{root}static/map/map.css">
</head><body class="list"><h1>Campaigns</h1>
<p class="muted">{count} campaigns. The same list as JSON: <a href="{root}campaigns?f=json">campaigns?f=json</a>;
every collection in <a href="{root}browser/">STAC Browser</a>.</p>
<table class="campaigns"><tr><th>campaign</th><th class="n">tiles</th><th>status</th><th></th></tr>
{rows}</table></body></html>
"""


def wants_html(request: Request) -> bool:
    """A browser asking (text/html before JSON in its Accept header), unless ``?f=json``."""
    if request.query_params.get("f") == "json":
        return False
    accept = request.headers.get("accept", "")
    html_at, json_at = accept.find("text/html"), accept.find("application/json")
    return html_at >= 0 and (json_at < 0 or html_at < json_at)


def esc(value: object) -> str:
    """Any value as HTML text or a quoted attribute's value: the one way values reach the
    pages made here."""
    return html.escape(str(value), quote=True)


def campaign_list_page(
    request: Request, definitions: list[CampaignDefinition], counts: dict[str, dict[str, int]]
) -> str:
    root = str(request.base_url)
    rows = []
    for d in definitions:
        by_status = counts.get(d.id, {})
        path = quote(d.id, safe="")
        bar = "".join(
            f'<span class="swatch" title="{esc(s)}: {esc(n)}" '
            f'style="background:{esc(STATUS_COLOURS.get(s, "white"))}"></span>{esc(n)} '
            for s, n in by_status.items()
            if n
        )
        rows.append(
            f"<tr><td><b>{esc(d.title or d.id)}</b><br><code>{esc(d.id)}</code></td>"
            f'<td class="n">{esc(sum(by_status.values()))}</td><td>{bar}</td>'
            f'<td><a href="{esc(f"{root}campaigns/{path}/map")}">map</a> · '
            f'<a href="{esc(f"{root}browser/#/collections/{path}")}">STAC Browser</a> · '
            f'<a href="{esc(f"{root}campaigns/{path}/summary")}">summary</a></td></tr>'
        )
    return LIST_PAGE.format(root=esc(root), count=esc(len(definitions)), rows="\n".join(rows))


class ChangedTile(BaseModel):
    status: str
    backend: str
    geometry: dict[str, Any] | None


class MapChanges(BaseModel):
    cursor: int
    tiles: dict[str, ChangedTile]
    more: bool = False


async def _page_state(request: Request, campaign_id: str) -> tuple[list[float] | None, int]:
    """The campaign's extent, and the history cursor taken before any tile is served (so
    the map misses no change made while it loads)."""
    async with request.app.state.get_connection(request, "r") as conn:
        found = await conn.fetchval("SELECT 1 FROM pgstac.collections WHERE id = $1", campaign_id)
        if not found:
            raise HTTPException(404, f"campaign {campaign_id} does not exist")
        cursor = (await mapview.changes(conn, campaign_id, None))["cursor"]
        return await mapview.extent(conn, campaign_id), int(cursor)


@dataclass(frozen=True)
class TileAddress:
    z: int
    x: int
    y: int


def tile_address(
    z: int = PathParam(ge=0, le=22), x: int = PathParam(ge=0), y: int = PathParam(ge=0)
) -> TileAddress:
    """A web mercator tile's z/x/y from the path, refused (400) outside the tile matrix."""
    if x >= 2**z or y >= 2**z:
        raise HTTPException(400, f"tile {z}/{x}/{y} is outside the tile matrix")
    return TileAddress(z, x, y)


def mosaic_tilejson(root: str, collection: dict[str, Any]) -> str:
    """The TileJSON of a product collection's mosaic (titiler-pgstac at /raster): its
    web-map link, drawn by the collection's default render as in STAC Browser and QGIS, or
    the bare URL while it has no render (titiler answers 400 then, and the map draws no
    mosaic)."""
    for link in mosaic_links(root, collection):
        if link["rel"] == "tilejson":
            return str(link["href"])
    return f"{mosaic_base(root, str(collection['id']))}/{TMS}/tilejson.json"


def create_router() -> APIRouter:
    router = APIRouter(tags=["Campaign map"])

    @router.get(
        "/campaigns/{campaign_id}/map", response_class=HTMLResponse, summary="The campaign map"
    )
    async def page(request: Request, campaign_id: str) -> HTMLResponse:
        bbox, cursor = await _page_state(request, campaign_id)
        root = str(request.base_url)
        config = {
            "root": root,
            "campaign": campaign_id,
            "bbox": bbox,
            "cursor": cursor,
            "colors": mapview.STATUS_COLOURS,
            "countries": f"{root}static/vendor/world-atlas/countries-50m.json",
        }
        async with request.app.state.get_connection(request, "r") as conn:
            config["vectorMinZoom"] = await mapview.vector_min_zoom(conn, campaign_id)
            products = campaign_products_id(campaign_id)
            content = await conn.fetchval(
                "SELECT content FROM pgstac.collections WHERE id = $1", products
            )
            if content is not None:
                config["products"] = products
                # (jsonb decoded by the pool's codec; text from a bare connection)
                collection = content if isinstance(content, dict) else json.loads(content)
                config["mosaic"] = mosaic_tilejson(root, collection)
        body = PAGE.format(
            title=esc(campaign_id),
            root=esc(root),
            browser=esc(f"{root}browser/#/collections/{quote(campaign_id, safe='')}"),
            config=esc(json.dumps(config)),
        )
        return HTMLResponse(body)

    @router.get(
        "/campaigns/{campaign_id}/tiles/{z}/{x}/{y}.pbf",
        summary="The campaign's tiles as a Mapbox vector tile (id, status, backend)",
        response_class=Response,
        responses={200: {"content": {MVT_TYPE: {}}}},
    )
    async def vector_tile(
        request: Request, campaign_id: str, at: TileAddress = Depends(tile_address)
    ) -> Response:
        async with request.app.state.get_connection(request, "r") as conn:
            tile = await mapview.vector_tile(conn, campaign_id, at.z, at.x, at.y)
        return Response(tile, media_type=MVT_TYPE, headers={"Cache-Control": "no-cache"})

    @router.get(
        "/campaigns/{campaign_id}/cells/{z}/{x}/{y}.pbf",
        summary="The campaign's tiles gathered into cells a few pixels wide, as a Mapbox "
        "vector tile (status: the most frequent, n: how many), for zooms where tiles are a "
        "few pixels wide",
        response_class=Response,
        responses={200: {"content": {MVT_TYPE: {}}}},
    )
    async def cell_tile(
        request: Request,
        campaign_id: str,
        at: TileAddress = Depends(tile_address),
        hide_status: list[str] = Query(default=[], description="statuses not counted"),
        hide_backend: list[str] = Query(default=[], description="back-ends not counted"),
    ) -> Response:
        async with request.app.state.get_connection(request, "r") as conn:
            tile = await mapview.cell_tile(
                conn, campaign_id, at.z, at.x, at.y, set(hide_status), set(hide_backend)
            )
        return Response(tile, media_type=MVT_TYPE, headers={"Cache-Control": "no-cache"})

    @router.get(
        "/campaigns/{campaign_id}/map/changes",
        response_model=MapChanges,
        summary="Tiles whose status changed after a cursor, and the new cursor",
    )
    async def changes(
        request: Request, campaign_id: str, since: int | None = Query(default=None, ge=0)
    ) -> dict[str, Any]:
        async with request.app.state.get_connection(request, "r") as conn:
            return await mapview.changes(conn, campaign_id, since)

    return router


def add_map(app: FastAPI) -> None:
    app.include_router(create_router())
    app.mount("/static/map", StaticFiles(directory=STATIC / "map"), name="map-static")
    if VENDOR.is_dir():
        app.mount("/static/vendor", StaticFiles(directory=VENDOR), name="map-vendor")

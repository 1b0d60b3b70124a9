"""Pages the service serves itself: STAC Browser at /browser/, pointed at this service's
own root at request time (so it works under any host and path prefix), and the API docs
with Swagger UI from local files instead of a CDN. None of them has an inline script (the
pages' Content-Security-Policy forbids it): configuration is a served script or a data-
attribute."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from catalog_service.settings import ApiSettings

# Swagger UI 5 and its styles, as fastapi-offline ships them.
SWAGGER_STATIC = Path(fastapi_offline.__file__).parent / "static"
# Where scripts/build_web.sh puts the build in a checkout.
DEFAULT_BROWSER_DIR = Path(__file__).resolve().parents[2] / "web" / "stac-browser" / "dist"
DOCS_STATIC = Path(__file__).parent / "static" / "docs"

DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title}</title>
<link rel="stylesheet" href="{root}/static/swagger-ui/swagger-ui.css">
<link rel="icon" href="{root}/static/swagger-ui/favicon.png">
</head><body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{root}/static/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{root}/static/docs/docs.js"></script>
</body></html>
"""


def browser_config(request: Request, title: str) -> str:
    """STAC Browser's runtime configuration: the catalogue is this service's root, which
    must equal the root's `self` link exactly (both come from the request's base URL)."""
    config = {
        "catalogUrl": str(request.base_url),
        "catalogTitle": title,
        "allowExternalAccess": False,
        "displayGeoTiffByDefault": False,
        # "Sign in" takes an API key or an OIDC access token, sent as a bearer token to
        # this service only: for private campaigns (and writes).
        "authConfig": {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "formatter": "Bearer",
            "description": "An API key (`tilekeeper auth key create`) or an OIDC access "
            "token. Public campaigns need none; private ones show for their owners.",
        },
    }
    return f"window.STAC_BROWSER_CONFIG = {json.dumps(config)};\n{TILES_FROM_RASTER_SERVICE}"


# COGs on STAC Browser's maps drawn by the raster service (api/raster.py) instead of in
# the page (geotiff.js drew a float index black): a product's own tile link (its render,
# served-items.py), else its item's tiles of that asset. A function, so not JSON.
TILES_FROM_RASTER_SERVICE = """
window.STAC_BROWSER_CONFIG.buildTileUrlTemplate = function (asset) {
  var item = asset.getContext();
  var link = (item.links || []).find(function (l) {
    return l.rel === "xyz" && l.href.indexOf("/raster/collections/") >= 0;
  });
  if (link) return link.href;
  return window.STAC_BROWSER_CONFIG.catalogUrl + "raster/collections/" +
    encodeURIComponent(item.collection) + "/items/" + encodeURIComponent(item.id) +
    "/tiles/WebMercatorQuad/{z}/{x}/{y}.png?assets=" + encodeURIComponent(asset.getKey());
};
"""


def add_browser(app: FastAPI, settings: ApiSettings) -> None:
    dist = settings.browser_dir or DEFAULT_BROWSER_DIR

    @app.get("/browser", include_in_schema=False)
    async def browser_root() -> RedirectResponse:
        return RedirectResponse("browser/")

    @app.get("/browser/config.js", include_in_schema=False)
    async def config_js(request: Request) -> Response:
        return Response(
            browser_config(request, settings.title),
            media_type="application/javascript",
            headers={"Cache-Control": "no-cache"},
        )

    if (dist / "index.html").is_file():
        app.mount("/browser", StaticFiles(directory=dist, html=True), name="browser")
        return

    @app.get("/browser/{path:path}", include_in_schema=False)
    async def not_built(path: str) -> JSONResponse:
        return JSONResponse(
            {
                "code": "NotFoundError",
                "description": f"STAC Browser is not built in {dist}: run "
                "`bash scripts/build_web.sh` (scripts/bootstrap.sh does)",
            },
            status_code=404,
        )


def add_offline_docs(app: FastAPI) -> None:
    """Replace the API docs page (its Swagger UI comes from a CDN, blank without internet,
    and starts from an inline script) by the same page on local files, started by a served
    script. FastAPI's OAuth2 redirect page (an inline script too) goes: the API declares
    no OAuth2 flow for Swagger UI to run."""
    docs_url, openapi_url = app.docs_url, app.openapi_url
    if not docs_url or not openapi_url:
        return
    replaced = {docs_url, app.swagger_ui_oauth2_redirect_url}
    app.router.routes[:] = [
        r for r in app.router.routes if getattr(r, "path", None) not in replaced
    ]
    app.mount("/static/swagger-ui", StaticFiles(directory=SWAGGER_STATIC), name="swagger-ui")
    app.mount("/static/docs", StaticFiles(directory=DOCS_STATIC), name="docs-static")

    @app.get(docs_url, include_in_schema=False, name="swagger_ui_html")  # linked by the root
    async def docs(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return HTMLResponse(
            DOCS_PAGE.format(
                title=escape(f"{app.title} - API"),
                root=escape(root),
                openapi_url=escape(f"{root}{openapi_url}"),
            )
        )

"""The tilekeeper STAC API: stac-fastapi-pgstac plus aggregation, atomic bulk writes,
database-error mapping and a start-up that tolerates a database still coming up.

``uvicorn --factory catalog_service.api.app:create_app`` serves it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from brotli_asgi import BrotliMiddleware
from fastapi import FastAPI, Request
from stac_fastapi.extensions import (
    BulkTransactionExtension,
    ItemCollectionFilterExtension,
    SearchFilterExtension,
    TransactionExtension,
)
from stac_fastapi.extensions.sort import ItemCollectionSortExtension, SearchSortExtension
from stac_fastapi.pgstac.app import instantiate_api
from stac_fastapi.pgstac.config import Settings as StacSettings
from stac_fastapi.pgstac.models.extensions import Extensions
from stac_fastapi.types.extension import ApiExtension
from starlette.middleware import Middleware
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware
from starlette.responses import JSONResponse

from catalog_service import __version__
from catalog_service.api.aggregation import AggregationExtension
from catalog_service.api.auth import protect_routes
from catalog_service.api.campaigns import add_campaign_routes
from catalog_service.api.clients import (
    AtomicBulkTransactionsClient,
    CampaignItemsAreManaged,
    GuardedTransactionsClient,
    TilekeeperCoreClient,
)
from catalog_service.api.db import database_lifespan
from catalog_service.api.errors import DatabaseErrorMiddleware, add_exception_handlers
from catalog_service.api.headers import add_security_headers
from catalog_service.api.limits import RequestBodyGuard
from catalog_service.api.mapview import add_map
from catalog_service.api.openapi import complete_openapi
from catalog_service.api.pages import add_browser, add_offline_docs
from catalog_service.api.products import add_product_routes
from catalog_service.api.queryables import TilekeeperFiltersClient
from catalog_service.api.raster import add_raster_routes
from catalog_service.api.root_path import PrefixedPath
from catalog_service.api.search_input import ExpressionLimits
from catalog_service.api.visibility import guard_named_collections
from catalog_service.database import DatabaseLogins, resolve_logins
from catalog_service.jobs.registration import TileRegistrar
from catalog_service.settings import ApiSettings, AuthSettings, DatabaseSettings, ProductSettings

# stac-fastapi logs every handled 4xx at ERROR with a traceback; those are the client's
# mistakes and already answered with a message, so only real failures are logged.
logging.getLogger("stac_fastapi.api.errors").setLevel(logging.CRITICAL)


@dataclass
class TilekeeperExtensions(Extensions):  # type: ignore[misc]
    """stac-fastapi-pgstac's extension set, with our all-or-nothing bulk client."""

    @property
    def transaction(self) -> list[ApiExtension]:
        return [
            TransactionExtension(
                client=GuardedTransactionsClient(),
                settings=self.settings,
                response_class=JSONResponse,
            ),
            BulkTransactionExtension(client=AtomicBulkTransactionsClient()),
        ]


# sortby as stac-fastapi implements it is the sort extension of STAC API v1.0.0 as well as
# v1.1.0 (which added only the optional sortables): pystac-client 0.x recognises the v1.0
# classes only, and warned that the server "does not conform to SORT".
SEARCH_SORT_CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/item-search#sort",
    "https://api.stacspec.org/v1.1.0/item-search#sort",
]
ITEMS_SORT_CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/ogcapi-features#sort",
    "https://api.stacspec.org/v1.1.0/ogcapi-features#sort",
]


def tilekeeper_extensions(stac: StacSettings) -> TilekeeperExtensions:
    """The extensions with our sort conformance classes and per-collection queryables."""
    queryables = TilekeeperFiltersClient()
    return TilekeeperExtensions(
        settings=stac,
        search_map={
            "sort": SearchSortExtension(conformance_classes=list(SEARCH_SORT_CONFORMANCE)),
            "filter": SearchFilterExtension(client=queryables),
        },
        item_collection_map={
            "sort": ItemCollectionSortExtension(conformance_classes=list(ITEMS_SORT_CONFORMANCE)),
            "filter": ItemCollectionFilterExtension(client=queryables),
        },
        extra_map={"aggregation": AggregationExtension()},
    )


def stac_settings(settings: ApiSettings) -> StacSettings:
    return StacSettings(
        stac_fastapi_title=settings.title,
        stac_fastapi_description=settings.description,
        stac_fastapi_landing_id="tilekeeper",
        stac_fastapi_version=__version__,
        root_path=settings.root_path,
        enable_transactions_extensions=True,
        enabled_extensions=None,
        cors_origins=list(settings.cors_origins),
        cors_methods=list(settings.cors_methods),
        cors_headers=list(settings.cors_headers),
    )


def create_app(
    settings: ApiSettings | None = None,
    db_settings: DatabaseSettings | None = None,
    logins: DatabaseLogins | None = None,
    products: ProductSettings | None = None,
    auth: AuthSettings | None = None,
) -> FastAPI:
    """Build the ASGI app. Nothing connects until start-up; the pools then come up in
    the background, so the app starts even while the database does not answer yet."""
    settings = settings or ApiSettings()
    logins = logins or resolve_logins(db_settings or DatabaseSettings())
    stac = stac_settings(settings)
    extensions = tilekeeper_extensions(stac)
    api = instantiate_api(
        client=TilekeeperCoreClient,
        extensions=extensions,
        lifespan=database_lifespan(logins, settings),
        settings=stac,
    )
    app: FastAPI = api.app
    app.state.api_settings = settings  # (app.state.settings is stac-fastapi's)
    app.state.tile_registrar = TileRegistrar(logins.writer.dsn)
    protect_routes(app, api, settings.require_keys, auth)
    add_exception_handlers(app)
    add_campaign_routes(app)
    add_product_routes(app, products or ProductSettings())
    add_browser(app, settings)
    add_map(app)
    add_raster_routes(
        app,
        products or ProductSettings(),
        logins.writer.dsn,
        (db_settings or DatabaseSettings()).data_dir,
    )
    add_offline_docs(app)
    guard_named_collections(app)  # last: it guards every route added above
    complete_openapi(app)

    async def managed(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"code": "ConflictError", "description": str(exc)}, status_code=409)

    app.add_exception_handler(CampaignItemsAreManaged, managed)
    compress_with_gzip(app)
    add_security_headers(app, settings, products or ProductSettings())
    app.user_middleware.append(Middleware(PrefixedPath))
    app.user_middleware.append(
        Middleware(
            RequestBodyGuard,
            max_bytes=settings.max_body_bytes,
            limits=ExpressionLimits.of(settings),
        )
    )
    # Innermost of the user middlewares: its 503/400 answers still pass through CORS.
    app.user_middleware.append(
        Middleware(
            DatabaseErrorMiddleware,
            attempts=settings.retry_attempts,
            retry_after_s=settings.retry_after_s,
        )
    )
    return app


def compress_with_gzip(app: FastAPI) -> None:
    """Answers are compressed with gzip, not upstream's brotli: requests (urllib3 2.8 with
    Brotli 1.2, what pystac-client, the openEO client and our own client use) silently
    drops the end of some large brotli answers (a 5 MB job page came out as 4.27 MB of
    JSON that does not parse), while gzip arrives whole. Starlette's gzip also leaves
    range answers alone and compresses large bodies off the event loop. COGs are
    compressed already."""
    gzip = Middleware(
        GZipMiddleware,
        minimum_size=1000,
        # Level 1: a page of 100 items (168 KB) takes 0.6 ms to 28 KB, level 6 2.0 ms to
        # 24 KB (zlib on this 2-core machine); under load the CPU is what runs short.
        compresslevel=1,
        exclude_content_types=(
            *DEFAULT_EXCLUDED_CONTENT_TYPES,
            "image/tiff",
            "image/png",
            "image/jpeg",
            "image/webp",
        ),
    )
    app.user_middleware[:] = [
        gzip
        if entry.cls is BrotliMiddleware  # type: ignore[comparison-overlap]
        else entry
        for entry in app.user_middleware
    ]

"""The products as a raster service: titiler-pgstac's routes under ``/raster``.

- ``/raster/collections/{collection_id}/...``: a collection's items as one mosaic (a
  pgstac search registered per collection, so it grows as products land): XYZ tiles,
  TileJSON, WMTS capabilities, a point, statistics over a feature, a part as GeoTIFF.
- ``/raster/collections/{collection_id}/items/{item_id}/...``: one product's COG.

Every route names its collection, so the visibility rule (visibility.py) applies as on
the STAC routes: a private campaign's mosaic is missing to everybody else. Only the
product store's files are opened (raster/hrefs.py), every size a request asks for is
bounded before anything is read (``bounded_request``), and errors answer in the STAC
API's shape. The routes only read: POSTed features are queries."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import threading
import time
from typing import Annotated, Any

import morecantile
import pystac
from fastapi import APIRouter, Depends, FastAPI, Path, Request
from psycopg import OperationalError
from psycopg_pool import ConnectionPool, PoolTimeout
from rasterio.errors import RasterioError, RasterioIOError
from rio_tiler.errors import (
    EmptyMosaicError,
    InvalidAssetName,
    NoAssetFoundError,
    RioTilerError,
    TileOutsideBounds,
)
from starlette.responses import Response
from titiler.core.dependencies import DefaultDependency
from titiler.core.errors import TilerError
from titiler.core.factory import MultiBaseTilerFactory
from titiler.core.resources.enums import OptionalHeader
from titiler.extensions.wmts import wmtsExtension
from titiler.mosaic.extensions.wmts import wmtsExtension as mosaic_wmts
from titiler.pgstac.dependencies import get_collection_id, get_stac_item
from titiler.pgstac.errors import MosaicNotFoundError
from titiler.pgstac.factory import MosaicTilerFactory

from catalog_service.api.errors import error_response
from catalog_service.api.raster_limits import RasterRoute, bounded_request
from catalog_service.raster import overview
from catalog_service.raster.backend import StoreBackend, StoreItemReader, StoreMosaicReader
from catalog_service.raster.hrefs import ReadableHrefs
from catalog_service.raster.overview import Pyramid
from catalog_service.raster.render import RASTER_PATH, TMS, WMTS_LAYER
from catalog_service.settings import ProductSettings, RasterSettings

logger = logging.getLogger(__name__)

PREFIX = f"/{RASTER_PATH}"
POOL_SIZE = 4
# An empty tile, or no product at a point: titiler answers 204.
EMPTY: dict[int | str, dict[str, Any]] = {204: {"description": "No product there"}}
# A product collection's mosaic: its products' latest versions.
CURRENT = "deprecated IS NULL"
# Web maps, plain longitude/latitude and Europe's equal-area grid (the EEA's, for EU27).
TILE_MATRIX_SETS = morecantile.TileMatrixSets(
    {name: morecantile.tms.get(name) for name in (TMS, "WorldCRS84Quad", "EuropeanETRS89_LAEAQuad")}
)


_pool_lock = threading.Lock()


def raster_pool(request: Request) -> ConnectionPool:
    return app_pool(request.app)


def app_pool(app: FastAPI) -> ConnectionPool:
    """titiler-pgstac's (psycopg) pool, opened at the first use; it registers a
    collection's mosaic search and keeps the overviews, so it logs in as the writer on
    the primary."""
    with _pool_lock:
        pool: ConnectionPool | None = getattr(app.state, "dbpool", None)
        if pool is None:
            pool = ConnectionPool(
                app.state.raster_dsn,
                min_size=1,
                max_size=POOL_SIZE,
                timeout=10,
                kwargs={
                    "options": "-c search_path=pgstac,public -c application_name=tilekeeper-raster "
                    f"-c statement_timeout={app.state.api_settings.statement_timeout_ms}"
                },
                open=True,
                name="tilekeeper-raster",
                # Checked when handed out: after a PostgreSQL restart each pooled
                # connection is dead, and would answer one request 503 each, minutes
                # later on a quiet map (the rehearsal, bench/rehearsal.py, found it).
                check=ConnectionPool.check_connection,
            )
            app.state.dbpool = pool
    return pool


def collection_mosaic(
    request: Request,
    collection_id: Annotated[str, Path(description="STAC collection identifier")],
) -> str:
    """The collection's mosaic: the pgstac search of its items (registered once)."""
    # Every argument given: titiler-pgstac's cache key takes them all by position. The
    # latest version of each product only (products.py keeps older ones, deprecated).
    search = get_collection_id(
        raster_pool(request), collection_id, None, None, None, None, None, CURRENT, "cql2-text"
    )
    return str(search)


def product_item(
    request: Request,
    collection_id: Annotated[str, Path(description="STAC collection identifier")],
    item_id: Annotated[str, Path(description="STAC item identifier")],
) -> pystac.Item:
    item: pystac.Item = get_stac_item(raster_pool(request), collection_id, item_id)
    return item


class StoreBackendParams(DefaultDependency):
    """The backend's pool, which hrefs it opens and the collection's overview (not query
    parameters)."""

    def __init__(self, request: Request) -> None:
        self.pool = raster_pool(request)
        self.hrefs = request.app.state.readable_hrefs
        self.overview = _overview_of(request.app, str(request.path_params.get("collection_id")))


_overviews: dict[str, tuple[float, Pyramid | None]] = {}
OVERVIEW_TTL_S = 5.0


def _overview_of(app: FastAPI, collection: str) -> Pyramid | None:
    """The collection's pyramid, looked up at most every OVERVIEW_TTL_S."""
    settings: RasterSettings = app.state.raster_settings
    if not settings.overviews:
        return None
    now = time.monotonic()
    known = _overviews.get(collection)
    if known is not None and now - known[0] < OVERVIEW_TTL_S:
        return known[1]
    with app_pool(app).connection() as conn:
        pyramid = overview.load(conn, collection, app.state.overview_folder)
    if pyramid is not None and not pyramid.path(pyramid.high).is_file():
        pyramid = None  # kept by another API process on a disk this one does not share
    _overviews[collection] = (now, pyramid)
    return pyramid


async def keep_overviews(app: FastAPI) -> None:
    """Take the products written since into their collections' overviews, every
    overview_interval_s (one API process at a time per collection: an advisory lock)."""
    settings: RasterSettings = app.state.raster_settings
    while settings.overviews:
        await asyncio.sleep(settings.overview_interval_s)
        try:
            await asyncio.to_thread(_keep_once, app)
        except (OperationalError, PoolTimeout) as exc:
            logger.warning("overviews not updated: the database did not answer (%s)", exc)
        except Exception:  # a bug must not end the loop: logged, tried again next time
            logger.exception("overviews not updated")


def _keep_once(app: FastAPI) -> None:
    hrefs: ReadableHrefs = app.state.readable_hrefs
    with app_pool(app).connection() as conn:
        # Each batch its own transaction (overview.update): not one for the whole queue,
        # which held its locks and showed nothing until the end.
        conn.autocommit = True
        try:
            _keep_collections(conn, hrefs, app.state.overview_folder)
        finally:
            conn.autocommit = False


def _keep_collections(conn: Any, hrefs: ReadableHrefs, folder: pathlib.Path) -> None:
    for collection in overview.pending_collections(conn):
        for progress in overview.update_all(conn, collection, hrefs, folder):
            logger.info(
                "overview of %s: %d products taken in, %d skipped, %d to go",
                collection, progress.pasted, progress.skipped, progress.remaining,
            )  # fmt: skip


class StoreReaderParams(DefaultDependency):
    def __init__(self, request: Request) -> None:
        self.hrefs = request.app.state.readable_hrefs


def create_routers() -> tuple[Any, Any]:
    mosaic = MosaicTilerFactory(
        path_dependency=collection_mosaic,
        backend=StoreBackend,
        backend_dependency=StoreBackendParams,
        dataset_reader=StoreMosaicReader,
        reader_dependency=StoreReaderParams,
        router=APIRouter(route_class=RasterRoute),
        router_prefix=f"{PREFIX}/{{collection_id}}",
        add_statistics=True,
        add_viewer=False,  # its page loads its libraries from a CDN
        add_part=True,
        add_ogc_maps=False,
        # The links carry the collection's render as query parameters (render.py): one
        # WMTS layer per tile matrix set, not a second one of the same name per render.
        get_renders=lambda _: {},
        # Which products (or which overview level) drew a tile: ids the caller may see.
        optional_headers=[OptionalHeader.x_assets],
        extensions=[mosaic_wmts(layer_identifier_provider=lambda _: WMTS_LAYER)],
        supported_tms=TILE_MATRIX_SETS,
    )
    items = MultiBaseTilerFactory(
        router=APIRouter(route_class=RasterRoute),
        reader=StoreItemReader,
        reader_dependency=StoreReaderParams,
        path_dependency=product_item,
        router_prefix=f"{PREFIX}/{{collection_id}}/items/{{item_id}}",
        add_viewer=False,
        extensions=[wmtsExtension()],
        supported_tms=TILE_MATRIX_SETS,
    )
    return mosaic, items


def _problem(code: str, status: int) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        if status == 204:
            return Response(status_code=204)
        if status >= 500:
            logger.warning("raster request %s: %s", request.url.path, exc)
        return error_response(code, str(exc) or code, status)

    return handler


def add_raster_routes(
    app: FastAPI, products: ProductSettings, dsn: str, data_dir: pathlib.Path | None = None
) -> None:
    app.state.raster_dsn = dsn
    app.state.raster_settings = settings = RasterSettings()
    app.state.overview_folder = settings.folder(data_dir)
    app.state.readable_hrefs = ReadableHrefs.of(products)
    mosaic, items = create_routers()
    bounded = [Depends(bounded_request(TILE_MATRIX_SETS))]
    # Items first: their paths are longer than, and would otherwise match, the mosaic's.
    app.include_router(
        items.router,
        prefix=f"{PREFIX}/{{collection_id}}/items/{{item_id}}",
        tags=["Raster: one product"],
        dependencies=bounded,
        responses=EMPTY,
    )
    app.include_router(
        mosaic.router,
        prefix=f"{PREFIX}/{{collection_id}}",
        tags=["Raster: a collection's mosaic"],
        dependencies=bounded,
        responses=EMPTY,
    )
    for exc, code, status in (
        (EmptyMosaicError, "NoContent", 204),
        (NoAssetFoundError, "NoContent", 204),
        (TileOutsideBounds, "NoContent", 204),  # a map asks beyond a product's edge
        (InvalidAssetName, "NotFoundError", 404),
        (MosaicNotFoundError, "NotFoundError", 404),
        (RasterioIOError, "ServiceUnavailable", 503),
        (PoolTimeout, "ServiceUnavailable", 503),
        (OperationalError, "ServiceUnavailable", 503),
        (RasterioError, "BadRequest", 400),
        (RioTilerError, "BadRequest", 400),
        (TilerError, "BadRequest", 400),
    ):
        app.add_exception_handler(exc, _problem(code, status))


def close_raster_pool(app: FastAPI) -> None:
    pool: ConnectionPool | None = getattr(app.state, "dbpool", None)
    if pool is not None:
        pool.close()
        app.state.dbpool = None

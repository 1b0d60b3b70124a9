"""The tables behind the campaign overviews (raster/overview.py): each product
collection's pyramid, and the products written since it was last brought up to date
(filled by the products' own write, in its transaction, so none is missed)."""

from __future__ import annotations

from catalog_service.database.figures_schema import FORGOTTEN
from catalog_service.database.forget import forget_sql

MIGRATION_SQL = """
CREATE TABLE IF NOT EXISTS tilekeeper.raster_overviews (
    collection text PRIMARY KEY,
    levels int[] NOT NULL,          -- [lowest zoom, highest zoom] of the pyramid
    bounds float8[] NOT NULL,       -- [west, south, east, north], web mercator metres
    asset text NOT NULL,            -- the products' asset drawn
    dtype text NOT NULL,
    bands int NOT NULL,
    nodata float8,
    products bigint NOT NULL DEFAULT 0,
    updated timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS tilekeeper.overview_pending (
    collection text NOT NULL,
    item_id text NOT NULL,
    PRIMARY KEY (collection, item_id)
);
INSERT INTO tilekeeper.overview_pending (collection, item_id)
SELECT collection, id FROM pgstac.items
WHERE content->'properties' ? 'tilekeeper:source_checksums'
  AND NOT coalesce((content->'properties'->>'deprecated')::boolean, false)
ON CONFLICT DO NOTHING;
"""

# A deleted collection takes its overview along: a new collection of the same id (another
# owner's, public) must not show the old one's pixels.
MIGRATION_SQL += forget_sql((*FORGOTTEN, "raster_overviews", "overview_pending"))

PENDING_SQL = """
INSERT INTO tilekeeper.overview_pending (collection, item_id)
SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING
"""

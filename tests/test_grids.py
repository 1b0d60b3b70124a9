"""Tile grids against independent references: the `mgrs` library (GeoTrans) for MGRS
names, and pyproj/EEA arithmetic for the LAEA grid."""

from __future__ import annotations

import json
from pathlib import Path

import mgrs
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import Point, box, shape

from catalog_service.grids import join_attributes, load_aoi, order_tiles, tiles_for
from catalog_service.grids.aoi import AoiError


@pytest.fixture(scope="module")
def reference() -> mgrs.MGRS:
    return mgrs.MGRS()


def test_utm20_ids_match_mgrs_squares_of_tile_centres(reference: mgrs.MGRS) -> None:
    # Belgium and around: zones 31 and 32, bands U.
    tiles = tiles_for("utm-20km", load_aoi("2.5,49.5,7.5,51.5"))
    assert len(tiles) > 100
    for tile_id, footprint in zip(tiles.ids, tiles.footprints, strict=True):
        centre = footprint.centroid
        assert reference.toMGRS(centre.y, centre.x, MGRSPrecision=0) == tile_id[:5]
    assert {int(t[:2]) for t in tiles.ids} == {31, 32}


def test_utm20_cell_geometry_is_exact(reference: mgrs.MGRS) -> None:
    tiles = tiles_for("utm-20km", load_aoi("4.5,50.8,4.9,51.0"))
    n = list(tiles.ids).index("31UFS_1_1")
    # 31UFS_1_1 is the second 20 km column and row of square FS: its lower-left corner is
    # MGRS 31UFS 20000 20000, i.e. the corner of the native bbox.
    lat, lon = reference.toLatLon("31UFS2000020000")
    x, y = Transformer.from_crs(4326, 32631, always_xy=True).transform(lon, lat)
    minx, miny, maxx, maxy = tiles.native_bbox[n]
    assert (maxx - minx, maxy - miny) == (20_000, 20_000)
    assert abs(minx - x) < 1.5 and abs(miny - y) < 1.5  # MGRS text is 1 m precision
    assert tiles.epsg[n] == 32631
    assert tiles.codes[n] == "UTM20KM-31UFS_1_1"
    # The WGS84 footprint follows the UTM square: its area back in UTM is 400 km2.
    to_utm = Transformer.from_crs(4326, 32631, always_xy=True)
    back = shapely.transform(
        tiles.footprints[n], lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1]))
    )
    assert back.area == pytest.approx(400e6, rel=1e-6)


def test_tiles_span_utm_zones_each_in_its_own_zone() -> None:
    tiles = tiles_for("utm-100km", load_aoi("5,45,7,46"))  # across the 31/32 border at 6E
    zones = dict(zip(tiles.ids, tiles.epsg, strict=True))
    assert {32631, 32632} <= set(zones.values())
    for tile_id, epsg in zones.items():
        assert epsg == 32600 + int(tile_id[:2])
    for lon_lat, zone in (((5.5, 45.5), 31), ((6.5, 45.5), 32)):
        covering = [
            t
            for t, f in zip(tiles.ids, tiles.footprints, strict=True)
            if f.contains(Point(lon_lat))
        ]
        assert any(int(t[:2]) == zone for t in covering)


def test_tile_ids_are_stable_across_aois() -> None:
    small = tiles_for("utm-20km", load_aoi("4.0,50.5,4.5,50.8"))
    large = tiles_for("utm-20km", load_aoi("3.0,50.0,5.5,51.5"))
    large_ids = dict(zip(large.ids, large.native_bbox.tolist(), strict=True))
    for tile_id, bbox in zip(small.ids, small.native_bbox.tolist(), strict=True):
        assert large_ids[tile_id] == bbox


def test_southern_hemisphere_uses_south_zones(reference: mgrs.MGRS) -> None:
    tiles = tiles_for("utm-20km", load_aoi("18.0,-34.2,18.6,-33.8"))  # Cape Town
    assert set(tiles.epsg.tolist()) == {32734}
    for tile_id, footprint in zip(tiles.ids, tiles.footprints, strict=True):
        c = footprint.centroid
        assert reference.toMGRS(c.y, c.x, MGRSPrecision=0) == tile_id[:5]


def test_eea_codes_follow_the_reference_grid() -> None:
    tiles = tiles_for("eea-20km", load_aoi("4.3,50.8,4.4,50.9"))  # Brussels
    to_laea = Transformer.from_crs(4326, 3035, always_xy=True)
    x, y = to_laea.transform(4.35, 50.85)
    e, n = int(x // 20_000 * 20_000), int(y // 20_000 * 20_000)
    expected = f"20kmE{e // 10_000}N{n // 10_000}"
    assert expected in set(tiles.ids)
    assert f"EEA-{expected}" in set(tiles.codes)
    k = list(tiles.ids).index(expected)
    assert tiles.native_bbox[k].tolist() == [e, n, e + 20_000, n + 20_000]
    # The documented example: the 20 km cell at (4,300,000, 3,200,000).
    grid = tiles_for("eea-100km", load_aoi("10,52,10.1,52.1"))
    assert grid.ids.tolist() == ["100kmE43N32"]
    assert tiles_for("eea-10km", load_aoi("10,52,10.01,52.01")).ids.tolist() == ["10kmE432N321"]


def test_only_tiles_intersecting_the_aoi() -> None:
    aoi = load_aoi({"type": "Polygon", "coordinates": [[[4, 50], [5, 50], [4, 51], [4, 50]]]})
    tiles = tiles_for("utm-20km", aoi)
    in_bbox = tiles_for("utm-20km", box(*aoi.bounds))
    assert 0 < len(tiles) < len(in_bbox)
    assert all(f.intersects(aoi) for f in tiles.footprints)


def test_aoi_from_files(tmp_path: Path) -> None:
    import geopandas as gpd

    geojson = tmp_path / "aoi.geojson"
    geojson.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": box(4, 50, 4.2, 50.2).__geo_interface__,
                    }
                ],
            }
        )
    )
    gpkg = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[box(4, 50, 4.2, 50.2)], crs=4326).to_crs(3035).to_file(gpkg)
    a, b = load_aoi(geojson), load_aoi(str(gpkg))
    assert a.symmetric_difference(b).area < 1e-6
    with pytest.raises(AoiError, match="neither a file nor a bbox"):
        load_aoi("no/such/file.gpkg")
    with pytest.raises(AoiError, match="west<east"):
        load_aoi("5,50,4,51")


def test_attributes_join_and_processing_order(tmp_path: Path) -> None:
    tiles = tiles_for("utm-20km", load_aoi("4.0,50.5,4.6,50.8"))
    chosen = tiles.ids[:3].tolist()
    table = pd.DataFrame({"tile_id": chosen, "cropland_perc": [10.0, 90.0, 50.0]})
    path = tmp_path / "attrs.parquet"
    table.to_parquet(path)
    from catalog_service.grids.aoi import read_table

    joined = order_tiles(join_attributes(tiles, read_table(path)), "-cropland_perc")
    assert joined.ids[:3].tolist() == [chosen[1], chosen[2], chosen[0]]
    props = list(joined.properties())
    assert props[0]["cropland_perc"] == 90.0
    assert "cropland_perc" not in props[5]  # no row, no property (never NaN)
    with pytest.raises(AoiError, match="no 'name' column"):
        join_attributes(tiles, table, key="name")


def test_item_geometry_and_properties() -> None:
    tiles = tiles_for("utm-20km", load_aoi("4.5,50.8,4.9,51.0"))
    geometry, bbox = next(tiles.geometries())
    props = next(tiles.properties())
    assert shape(geometry).is_valid and shape(geometry).bounds == pytest.approx(bbox)
    assert props["proj:code"] == "EPSG:32631"
    assert props["mgrs:utm_zone"] == 31 and props["mgrs:latitude_band"] == "U"
    assert props["spatial_extent"]["crs"] == 32631
    assert props["proj:bbox"] == tiles.native_bbox[0].tolist()

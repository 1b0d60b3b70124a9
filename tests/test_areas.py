"""Areas from the wild: the EU27 from real country outlines (the Natural Earth derivative
installed from npm), repaired part by part, overseas parts dropped and named, named areas,
the preview, and the CLI creating the EU27 campaign from the raw country file."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
from rasterio.io import MemoryFile
from shapely.geometry import shape
from typer.testing import CliRunner

from catalog_service.cli.main import app
from catalog_service.client.campaigns import Campaigns
from catalog_service.client.http import HttpSession
from catalog_service.grids import GRIDS, fit_area, load_aoi, tiles_for
from catalog_service.grids.aoi import AoiError
from catalog_service.grids.named import EU27, countries_file
from catalog_service.grids.preview import PALETTE

runner = CliRunner()
BOWTIE = {"type": "Polygon", "coordinates": [[[4, 50], [5, 51], [5, 50], [4, 51], [4, 50]]]}


@pytest.fixture(scope="module")
def eu27_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 27 member states as a user would select them from the country file."""
    import pycountry

    wanted: set[str] = set()
    for c in EU27:
        country = pycountry.countries.get(alpha_2=c)
        assert country is not None, c
        wanted.add(country.alpha_3)
    features = json.loads(countries_file().read_bytes())["features"]
    frame = gpd.GeoDataFrame.from_features(
        [f for f in features if f["properties"]["A3"] in wanted], crs=4326
    )
    assert len(frame) == 27
    path = tmp_path_factory.mktemp("aoi") / "eu27.gpkg"
    frame.to_file(path)
    return path


def test_the_raw_country_file_cannot_be_unioned_as_is(eu27_file: Path) -> None:
    """Why outlines are repaired part by part: the file as it is breaks a plain union."""
    frame = gpd.read_file(eu27_file)
    assert not frame.geometry.is_valid.all()
    with pytest.raises(shapely.errors.GEOSException):
        shapely.union_all(frame.geometry.values)


def test_eu27_on_the_eea_grid_drops_the_overseas_parts(eu27_file: Path) -> None:
    named, raw = (tiles_for("eea-20km", fit_area("eea-20km", s).geometry) for s in ("eu27", str(eu27_file)))  # fmt: skip
    assert named.ids.tolist() == raw.ids.tolist()
    for spec in ("eu27", str(eu27_file)):
        fitted = fit_area("eea-20km", spec)
        tiles = tiles_for("eea-20km", fitted.geometry)
        assert 11_000 < len(tiles) < 12_000, len(tiles)
        dropped = {(p.label.split(",")[0], p.where) for p in fitted.dropped}
        # French Guiana, New Caledonia and the Dutch Caribbean are outside EPSG:3035.
        assert any("France" in label or "FRA" in label for label, _ in dropped)
        assert any("Netherlands" in label or "NLD" in label for label, _ in dropped)
        guiana = [p for p in fitted.dropped if p.where.startswith("53.0°W")]
        assert guiana and guiana[0].area_km2 > 80_000
        assert fitted.repaired, "invalid outlines were repaired"
        notes = "\n".join(fitted.notes("eea-20km"))
        assert "dropped" in notes and "eea-20km" in notes
        # Every tile lies where EPSG:3035 is defined: nothing folded over.
        use = GRIDS["eea-20km"].area_of_use
        assert shapely.contains(use.buffer(0.5), tiles.footprints).all()


def test_the_utm_grid_keeps_what_it_can_represent() -> None:
    fitted = fit_area("utm-20km", "country:NL")
    # The Caribbean islands are inside the UTM zones: kept.
    assert not fitted.dropped
    tiles = tiles_for("utm-20km", fitted.geometry)
    lons = shapely.bounds(tiles.footprints)[:, 0]
    assert (lons < -60).any() and (lons > 3).any()
    # Antarctica is beyond 80S, where the UTM zones end.
    antarctica = fit_area("utm-100km", "-60,-85,-50,-70")
    assert not antarctica.dropped and antarctica.clipped
    assert antarctica.geometry.bounds[1] == pytest.approx(-80)


def test_named_areas() -> None:
    both = fit_area("utm-20km", "country:BE,NLD")
    belgium = fit_area("utm-20km", "country:Belgium")
    assert both.geometry.contains(belgium.geometry.representative_point())
    assert belgium.area_km2() == pytest.approx(30_500, rel=0.05)
    with pytest.raises(AoiError, match="unknown country 'XX'"):
        fit_area("utm-20km", "country:XX")
    with pytest.raises(AoiError, match="country codes"):
        fit_area("utm-20km", "country:")


def test_an_invalid_polygon_is_repaired_not_refused() -> None:
    fitted = fit_area("utm-20km", json.dumps(BOWTIE))
    assert fitted.repaired == ["the AOI"] and fitted.geometry.is_valid
    assert fitted.area_km2() > 1000
    assert load_aoi(BOWTIE).equals(fitted.geometry)


def test_an_area_outside_the_grid_is_an_error_that_says_so() -> None:
    with pytest.raises(AoiError, match="no part of the AOI lies where the grid is defined"):
        fit_area("eea-20km", "-60,-10,-50,0")


def _png_size_and_colours(data: bytes) -> tuple[int, int, set[tuple[int, ...]]]:
    """The picture decoded by GDAL: its size and the colours its pixels show."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with MemoryFile(data) as memory, memory.open() as png:
        assert png.driver == "PNG" and png.count == 1 and png.dtypes[0] == "uint8"
        palette = png.colormap(1)
        indices = np.unique(png.read(1)).tolist()
        return png.width, png.height, {tuple(palette[i]) for i in indices}


def test_preview_counts_without_storing_and_draws(tmp_path: Path, api: str) -> None:
    picture = tmp_path / "be.png"
    result = runner.invoke(
        app, ["campaign", "preview", "--aoi", "country:BE", "--grid", "eea-20km", "--png", str(picture)]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = len(tiles_for("eea-20km", fit_area("eea-20km", "country:BE").geometry))
    assert f"{expected:,} tiles of eea-20km" in result.output
    width, height, colours = _png_size_and_colours(picture.read_bytes())
    assert width == 1000 and 500 < height < 1500
    # Background, tiles, tile edges, outline: each in its colour, and no other.
    assert colours == {tuple(c) for c in PALETTE.values()}
    campaign = f"dry-{uuid.uuid4().hex[:6]}"
    dry = runner.invoke(
        app,
        ["campaign", "create", campaign, "--api", api, "--aoi", "country:BE", "--grid",
         "eea-20km", "--start", "2024-01-01", "--end", "2024-02-01", "--dry-run"],
    )  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert "nothing was stored" in dry.output
    assert campaign not in {c["id"] for c in Campaigns(HttpSession(api)).all()}


def test_create_eu27_from_the_raw_country_file(eu27_file: Path, api: str) -> None:
    campaign = f"eu27-{uuid.uuid4().hex[:6]}"
    created = runner.invoke(
        app,
        ["campaign", "create", campaign, "--api", api, "--aoi", str(eu27_file), "--grid",
         "eea-20km", "--start", "2024-01-01", "--end", "2024-12-31"],
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    assert (
        "dropped" in created.output and "outside the area eea-20km can represent" in created.output
    )
    campaigns = Campaigns(HttpSession(api))
    counts: dict[str, Any] = campaigns.summary(campaign)
    assert 11_000 < counts["tiles"] < 12_000
    assert counts["by_status"] == {"not_started": counts["tiles"]}
    stored = shape(campaigns.get(campaign)["aoi"])
    assert stored.is_valid and stored.bounds[0] > -35.6  # nothing from beyond the grid
    campaigns.delete(campaign)

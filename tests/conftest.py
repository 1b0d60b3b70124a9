"""Fixtures: a real PostgreSQL + PostGIS + pgstac cluster started by the same code as
`tilekeeper db up`, in a temporary directory on a free port, the real API over HTTP and a
headless Chromium; and the markers every test gets from the fixtures it uses.

Helpers live in tests/support/: test modules import them from there, never from here."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright
from support.database import (
    Database,
    admin_token,
    make_database,
    products_settings,
    start_api,
    wait_ready,
)
from support.stac import make_collection

from catalog_service.api.pages import DEFAULT_BROWSER_DIR

# -- markers (registered in pyproject.toml) -----------------------------------------------

# Fixtures that need the PostgreSQL cluster: `database` and all that depend on it are in a
# test's closure (item.fixturenames), so `api`, `http`, `new_collection` and modules'
# own fixtures over them count too.
DB_FIXTURES = {"database"}
# Modules that start clusters of their own (make_database / own_database) in a test or in
# a fixture that does not go through `database`: all their tests need PostgreSQL.
OWN_CLUSTER_HELPERS = ("make_database", "own_database")


def _starts_own_cluster(module: object) -> bool:
    return any(getattr(module, name, None) is not None for name in OWN_CLUSTER_HELPERS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """db: needs PostgreSQL; browser: needs Chromium; fuzz: tests/test_fuzz*.py. `slow`
    stays explicit (pytest.mark.slow in the modules)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        module = getattr(item, "module", None)
        if names & DB_FIXTURES or _starts_own_cluster(module):
            item.add_marker(pytest.mark.db)
        if "browser" in names:
            item.add_marker(pytest.mark.browser)
        if item.path.name.startswith("test_fuzz"):
            item.add_marker(pytest.mark.fuzz)


@pytest.fixture(scope="session", autouse=True)
def _no_external_database() -> Iterator[None]:
    # Tests must use their own cluster even if the developer's shell points elsewhere.
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PG")}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session", autouse=True)
def _openeo_config_home() -> Iterator[Path]:
    # The openEO client's auth config and refresh tokens of the tests, not the user's.
    home = Path(tempfile.mkdtemp(prefix="tilekeeper-openeo-config-"))
    saved = os.environ.get("OPENEO_CONFIG_HOME")
    os.environ["OPENEO_CONFIG_HOME"] = str(home)
    yield home
    if saved is None:
        os.environ.pop("OPENEO_CONFIG_HOME", None)
    else:
        os.environ["OPENEO_CONFIG_HOME"] = saved
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _egress_to_this_machine() -> Iterator[None]:
    # The tests' back-ends, webhook receivers and files are all on 127.0.0.1, which the
    # egress policy refuses by default (tests/test_egress.py passes its own settings).
    saved = os.environ.get("TILEKEEPER_EGRESS_ALLOW_LOOPBACK")
    os.environ["TILEKEEPER_EGRESS_ALLOW_LOOPBACK"] = "true"
    yield
    if saved is None:
        os.environ.pop("TILEKEEPER_EGRESS_ALLOW_LOOPBACK", None)
    else:
        os.environ["TILEKEEPER_EGRESS_ALLOW_LOOPBACK"] = saved


@pytest.fixture(scope="session")
def database() -> Iterator[Database]:
    db = make_database("tilekeeper-test-")
    # Runners (in-process and `tilekeeper campaign run` children) harvest into the store
    # the test API serves.
    os.environ["TILEKEEPER_PRODUCTS_STORE"] = str(products_settings(db).store)
    # Clients (here and in runner children) write with the admin key `db up` made.
    os.environ["TILEKEEPER_API_KEY"] = admin_token(db)
    yield db
    os.environ.pop("TILEKEEPER_PRODUCTS_STORE", None)
    os.environ.pop("TILEKEEPER_API_KEY", None)
    db.destroy()


@pytest.fixture(scope="session")
def api(database: Database) -> Iterator[str]:
    server = start_api(database)
    wait_ready(server.url)
    yield server.url
    server.stop()


@pytest.fixture()
def http(api: str, database: Database) -> Iterator[httpx.Client]:
    """A client writing with the admin key."""
    headers = {"Authorization": f"Bearer {admin_token(database)}"}
    with httpx.Client(base_url=api, timeout=60, headers=headers) as client:
        yield client


@pytest.fixture()
def new_collection(http: httpx.Client) -> Callable[[], str]:
    """Creates a fresh, uniquely named collection through the API."""

    def create() -> str:
        collection_id = f"test-{uuid.uuid4().hex[:10]}"
        response = http.post("/collections", json=make_collection(collection_id))
        assert response.status_code == 201, response.text
        return collection_id

    return create


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is installed by scripts/bootstrap.sh (apt: chromium)"
    assert (DEFAULT_BROWSER_DIR / "index.html").is_file(), "run scripts/build_web.sh"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()

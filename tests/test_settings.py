"""Settings read from the environment: values a service cannot run with are refused at
start, with a message naming the setting."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from catalog_service.cli.main import app
from catalog_service.settings import ApiSettings


@pytest.mark.parametrize(
    "given, read", [("/stac/", "/stac"), ("stac", "/stac"), ("/a/b/", "/a/b"), ("/", ""), ("", "")]
)
def test_a_root_path_is_read_as_a_plain_prefix(given: str, read: str) -> None:
    assert ApiSettings(root_path=given).root_path == read


@pytest.mark.parametrize("given", ["/stac/../x", "/a b", "/./x", "/x?y"])
def test_a_root_path_that_is_not_a_plain_prefix_is_refused(given: str) -> None:
    with pytest.raises(ValidationError, match="must be a plain path"):
        ApiSettings(root_path=given)


def test_serve_with_a_bad_setting_says_which_and_exits_1() -> None:
    result = CliRunner().invoke(
        app, ["serve"], env={"TILEKEEPER_API_ROOT_PATH": "/a/../b", "COLUMNS": "200"}
    )
    assert result.exit_code == 1
    assert "setting root_path of ApiSettings" in result.output
    assert "must be a plain path" in result.output

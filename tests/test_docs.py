"""The documentation holds together: docs/configuration.md is what scripts/settings_doc.py
generates from the settings classes, and every relative link of README.md and docs/*.md
leads to a file (and heading) that exists. No database, no network."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _settings_doc() -> ModuleType:
    path = REPO / "scripts" / "settings_doc.py"
    spec = importlib.util.spec_from_file_location("settings_doc", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("settings_doc", module)
    spec.loader.exec_module(module)
    return module


def test_configuration_page_is_generated_from_the_settings() -> None:
    doc = _settings_doc()
    expected = doc.render()
    current = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == expected, (
        "docs/configuration.md is stale: run .venv/bin/python scripts/settings_doc.py"
    )
    assert doc.main(["--check"]) == 0


def test_configuration_page_names_every_setting() -> None:
    doc = _settings_doc()
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    for cls in doc.settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        for name in cls.model_fields:
            assert f"`{(prefix + name).upper()}`" in text


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, re.M)}


def _links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = CODE_SPAN.sub("", text)
    return [m.group(1) for m in LINK.finditer(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_somewhere(page: Path) -> None:
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md is where a newcomer looks a module up: a module it does not
    name is one nobody can find there."""
    page = (REPO / "docs" / "architecture.md").read_text()
    modules = [
        path
        for package in ("catalog_service", "ingest")
        for path in sorted((REPO / package).rglob("*.py"))
        if path.name != "__init__.py"
    ]
    unnamed = [str(m.relative_to(REPO)) for m in modules if f"`{m.name}`" not in page]
    assert unnamed == [], f"add them to docs/architecture.md: {unnamed}"

"""``python -m catalog_service`` is the ``tilekeeper`` CLI."""

from catalog_service.cli.main import app

app()

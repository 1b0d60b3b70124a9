"""FastAPI dependencies of the campaign and product routes: database connections, the
campaign a path names, worker ids, and request bodies read as strict JSON.

Every JSON body goes through :func:`strict_body`: orjson (NaN and Infinity are not JSON
and answer 400, unlike ``json.loads``), no string over the service's limit, and the
model's validation errors as one 400 line. :class:`BodyRoute` documents such a body in
the OpenAPI document, so a route declares its body once, as a parameter.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import asyncpg
import orjson
from fastapi import Depends, Path, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from catalog_service.api.auth import current_identity
from catalog_service.api.campaign_models import WORKER_PATTERN
from catalog_service.api.errors import BadRequest, validation_problems
from catalog_service.api.limits import string_limit_problem
from catalog_service.api.openapi import json_body
from catalog_service.api.visibility import may_see, missing_campaign
from catalog_service.jobs import definitions
from catalog_service.jobs.campaign import CampaignDefinition

M = TypeVar("M", bound=BaseModel)
WORKER_PATTERN_RE = re.compile(WORKER_PATTERN)


def strict_json(raw: bytes) -> Any:
    """``raw`` as JSON, NaN and Infinity refused."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON (NaN/Infinity are not JSON): {exc}") from None


async def parse_body(request: Request, model: type[M]) -> M:
    """Strict JSON into ``model``, with no string over the service's limit."""
    data = strict_json(await request.body())
    too_long = string_limit_problem(data, request.app.state.api_settings.max_string_chars, "body")
    if too_long:
        raise BadRequest(too_long)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(f"invalid request body: {validation_problems(exc.errors())}") from None


_BODY_MODEL = "__body_model__"
F = TypeVar("F", bound=Callable[..., Any])


def document_body(model: type[BaseModel]) -> Callable[[F], F]:
    """Mark a dependency as reading the request body as ``model`` (for the OpenAPI
    document of :class:`BodyRoute`), for a body parsed otherwise (tile registrations)."""

    def mark(dependency: F) -> F:
        setattr(dependency, _BODY_MODEL, model)
        return dependency

    return mark


def strict_body(model: type[M]) -> Callable[[Request], Coroutine[Any, Any, M]]:
    """A dependency reading the request body as ``model`` (see :func:`parse_body`);
    routes of :class:`BodyRoute` document it as their JSON body."""

    @document_body(model)
    async def body(request: Request) -> M:
        return await parse_body(request, model)

    return body


def Json(model: type[BaseModel]) -> Any:
    """``Annotated[Model, Json(Model)]``: a route parameter holding the strict JSON body."""
    return Depends(strict_body(model))


def _body_models(dependant: Dependant) -> list[type[BaseModel]]:
    found = getattr(dependant.call, _BODY_MODEL, None)
    own = [found] if found is not None else []
    return own + [m for d in dependant.dependencies for m in _body_models(d)]


class BodyRoute(APIRoute):
    """An APIRoute whose OpenAPI operation declares the :func:`strict_body` it reads."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        models = _body_models(self.dependant)
        if models:
            self.openapi_extra = {**json_body(models[0]), **(self.openapi_extra or {})}


async def read_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the read pool, back in the pool when the route returns."""
    async with request.app.state.get_connection(request, "r") as conn:
        yield conn


async def write_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the write pool, back in the pool when the route returns (or
    raises: the error passes through to the retrying middleware)."""
    async with request.app.state.get_connection(request, "w") as conn:
        yield conn


# scope="function": the connection goes back before the answer is sent (a job list of
# 100,000 tiles must not hold it while it streams).
ReadConnection = Annotated[asyncpg.Connection, Depends(read_connection, scope="function")]
WriteConnection = Annotated[asyncpg.Connection, Depends(write_connection, scope="function")]
# Reads a caller acts on (the runner's job lists and counts, the harvest's list): from the
# primary, which a replica may lag behind (read_routing.py).
FreshConnection = WriteConnection


async def visible_campaign(request: Request, campaign_id: str) -> CampaignDefinition:
    """The campaign the path names, if the caller may see it. A private campaign is
    missing to everybody but its owners and admins: the same 404 as a missing one (the
    route guard of ``visibility.py`` answers first; this holds without it too)."""
    async with request.app.state.get_connection(request, "r") as conn:
        definition = await definitions.get_definition(conn, campaign_id)
    if definition.visibility == "private" and not may_see(
        await current_identity(request), definition.owners
    ):
        raise missing_campaign(campaign_id)
    return definition


# A parameter, never in a route's ``dependencies=``: those run before the visibility
# guard (appended last to them), whose 401s and 404s must come first.
Campaign = Annotated[CampaignDefinition, Depends(visible_campaign)]


def worker_id(
    worker: Annotated[
        str,
        Path(
            description="A runner worker's id",
            json_schema_extra={"pattern": WORKER_PATTERN},
        ),
    ],
) -> str:
    """The worker a path names (checked here, to answer the service's own 400)."""
    if not WORKER_PATTERN_RE.match(worker):
        raise BadRequest(f"worker id {worker!r} must match {WORKER_PATTERN}")
    return worker


WorkerId = Annotated[str, Depends(worker_id)]

"""Turning database failures into HTTP answers, in one place.

- Transient conflicts (deadlock, serialization, pgstac's partition-constraint race ...)
  roll back on the server, so the whole request is replayed with jittered backoff;
  if they persist the answer is 503 with Retry-After.
- The database being unreachable answers 503 (reads are replayed a few times first).
- Input the database rejects (pgstac RAISE, bad literals, unknown functions) answers 400.
- Anything else stays a 500: a bug to fix, not to hide.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import asyncpg
import jsonpatch
import jsonpointer
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from stac_fastapi.types.errors import NotFoundError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from catalog_service.api.asgi import replaying
from catalog_service.api.headers import API_HEADERS

logger = logging.getLogger(__name__)

MISSING_COLLECTION = "The collection does not exist (create it first with POST /collections)."
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "23514", "42P01", "55P03", "55006"})
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# A statement over statement_timeout: asking again would take as long.
TIMEOUT_SQLSTATE = "57014"
BAD_INPUT_SQLSTATES = frozenset(
    # 42804: a filter pgstac turns into SQL of the wrong type (`filter=false`).
    {"P0001", "42883", "42703", "42804", "22P02", "22023", "22007", "22008"}
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class DatabaseUnavailable(Exception):
    """The service has no database connection (yet)."""


class BadRequest(Exception):
    """Input a route rejects before anything is written: 400, BadRequest."""


class BulkWriteRejected(Exception):
    """A bulk write in which some items are invalid; nothing was stored."""

    def __init__(self, received: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} of {received} items are invalid; nothing was stored")
        self.received = received
        self.errors = errors


class Failure(enum.Enum):
    TRANSIENT = "transient"
    UNAVAILABLE = "unavailable"
    BAD_INPUT = "bad_input"
    NO_PARTITION = "no_partition"
    TIMEOUT = "timeout"


def classify(exc: BaseException) -> tuple[Failure, BaseException] | None:
    """What kind of database failure ``exc`` (or an exception it wraps) is."""
    seen: BaseException | None = exc
    while seen is not None:
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(seen, asyncpg.PostgresError | psycopg.Error) and sqlstate:
            if sqlstate == "23514" and "no partition of relation" in str(seen):
                # Writing into a collection that does not exist (pgstac partitions per
                # collection); can also be a brief race while a partition is created.
                return Failure.NO_PARTITION, seen
            if sqlstate in TRANSIENT_SQLSTATES:
                return Failure.TRANSIENT, seen
            if sqlstate == TIMEOUT_SQLSTATE:
                return Failure.TIMEOUT, seen
            if sqlstate in UNAVAILABLE_SQLSTATES or sqlstate.startswith("08"):
                return Failure.UNAVAILABLE, seen
            if sqlstate in BAD_INPUT_SQLSTATES or sqlstate.startswith("22"):
                return Failure.BAD_INPUT, seen
            if sqlstate == "42601" and ("tsquery" in str(seen) or "escaped character" in str(seen)):
                # Free-text search (`q`) that PostgreSQL cannot parse.
                return Failure.BAD_INPUT, seen
        if isinstance(
            seen,
            DatabaseUnavailable
            | OSError
            | asyncio.TimeoutError
            | asyncpg.exceptions.ConnectionDoesNotExistError
            | asyncpg.exceptions.InterfaceError
            # What asyncpg raises when the server goes away mid-query or refuses
            # connections while it starts or stops (seen with PostgreSQL stopped mid-run).
            | asyncpg.exceptions.InternalClientError
            | psycopg.OperationalError,
        ):
            return Failure.UNAVAILABLE, seen
        seen = seen.__cause__ or seen.__context__
    return None


def error_body(code: str, description: str, **extra: Any) -> bytes:
    """An error in the STAC API's shape, for pure ASGI answers."""
    return json.dumps({"code": code, "description": description, **extra}).encode()


def error_response(
    code: str,
    description: str,
    status: int,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """An error in the STAC API's shape: {code, description, ...}."""
    body = {"code": code, "description": description, **extra}
    return JSONResponse(body, status_code=status, headers=headers)


def validation_problems(errors: Sequence[Any]) -> str:
    """pydantic's errors as one line: ``where: what; ...`` (the first ten)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ())) or 'body'}: {err.get('msg')}"
        for err in errors[:10]
    )


class DatabaseErrorMiddleware:
    """Pure ASGI so the request body can be replayed for a retry."""

    def __init__(self, app: ASGIApp, attempts: int = 6, retry_after_s: int = 2) -> None:
        self.app = app
        self.attempts = max(1, attempts)
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        method = scope.get("method", "GET")

        for attempt in range(1, self.attempts + 1):
            started = False
            replay = replaying(body, receive)

            async def tracked_send(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                await send(message)

            try:
                await self.app(scope, replay, tracked_send)
                return
            except Exception as exc:
                found = classify(exc)
                if started or found is None:
                    raise
                kind, cause = found
                retryable = (
                    kind is Failure.TRANSIENT
                    or (kind is Failure.UNAVAILABLE and method in SAFE_METHODS and attempt < 3)
                    or (kind is Failure.NO_PARTITION and attempt < 3)
                )
                if retryable and attempt < self.attempts:
                    # Full jitter: concurrent losers of a deadlock must not collide again.
                    await asyncio.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))
                    continue
                await self._answer(send, kind, cause, attempt)
                return

    async def _answer(self, send: Send, kind: Failure, cause: BaseException, attempts: int) -> None:
        headers = [(b"content-type", b"application/json")]
        if kind is Failure.NO_PARTITION:
            status = 404
            body = error_body("NotFoundError", MISSING_COLLECTION)
        elif kind is Failure.BAD_INPUT:
            status = 400
            message = getattr(cause, "message", None) or str(cause)
            body = error_body(
                "InvalidQueryParameter", f"The database rejected the request: {message}"
            )
        else:
            status = 503
            headers.append((b"retry-after", str(self.retry_after_s).encode()))
            if kind is Failure.TIMEOUT:
                logger.warning("statement timeout: %s", cause)
                description = (
                    "The request needed longer than the statement timeout "
                    "(TILEKEEPER_API_STATEMENT_TIMEOUT_MS) and was stopped; nothing was "
                    "changed. Narrow it (fewer collections, a smaller area or period)."
                )
            elif kind is Failure.TRANSIENT:
                logger.warning("transient database error after %d attempts: %r", attempts, cause)
                description = (
                    f"The database stayed busy ({type(cause).__name__}) after {attempts} attempts; "
                    "nothing was changed. Retry after the Retry-After delay."
                )
            else:
                # One line per refused request, not a traceback: an outage is no bug.
                logger.warning("database unavailable (%s): %s", type(cause).__name__, cause)
                description = (
                    "The catalogue database is unavailable; retry after the Retry-After delay."
                )
            body = error_body("ServiceUnavailable", description)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def unavailable_connection(
    request: Request, readwrite: Literal["r", "w"] = "r"
) -> AsyncIterator[asyncpg.Connection]:
    """Stands in for the connection getter until the pools exist."""
    raise DatabaseUnavailable("the database connection is not established yet")
    yield  # pragma: no cover


_HTTP_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFoundError",
    405: "MethodNotAllowed",
    409: "ConflictError",
    413: "PayloadTooLarge",
}


def add_exception_handlers(app: FastAPI) -> None:
    async def bulk_rejected(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BulkWriteRejected)
        return error_response(
            "BulkWriteRejected", str(exc), 400, received=exc.received, errors=exc.errors
        )

    async def bad_request(request: Request, exc: Exception) -> JSONResponse:
        return error_response("BadRequest", str(exc), 400)

    async def bad_json(request: Request, exc: Exception) -> JSONResponse:
        # stac-fastapi-pgstac parses `intersects` and `query` GET parameters without a guard.
        return error_response("InvalidQueryParameter", f"Invalid JSON in a parameter: {exc}", 400)

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        # pgstac's "no data found" reaches us as a NotFoundError without a message.
        description = str(exc) or f"{request.url.path} does not exist."
        return error_response("NotFoundError", description, 404)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        # FastAPI's own shape is {"detail": ...}; the STAC API's is {code, description}.
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "HTTPError")
        return error_response(code, str(exc.detail), exc.status_code, exc.headers)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = validation_problems(exc.errors())
        return error_response("BadRequest", f"invalid request: {problems}", 400)

    async def bad_patch(request: Request, exc: Exception) -> JSONResponse:
        # A JSON Patch whose path does not exist in the document, or a failed `test`.
        return error_response("BadRequest", f"the patch does not apply: {exc}", 400)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug: answered in the STAC shape, and the client is told the connection ends
        # (uvicorn closes it after an unhandled exception; clients otherwise see a reset).
        description = "An unexpected error; it is logged."
        headers = {**API_HEADERS, "Connection": "close"}
        return error_response("InternalServerError", description, 500, headers)

    app.add_exception_handler(Exception, server_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(jsonpatch.JsonPatchException, bad_patch)
    app.add_exception_handler(jsonpointer.JsonPointerException, bad_patch)
    app.add_exception_handler(BadRequest, bad_request)
    app.add_exception_handler(BulkWriteRejected, bulk_rejected)
    app.add_exception_handler(NotFoundError, not_found)
    app.add_exception_handler(json.JSONDecodeError, bad_json)

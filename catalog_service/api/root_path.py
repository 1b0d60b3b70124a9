"""The path prefix of a reverse proxy, whether the proxy strips it or not.

``TILEKEEPER_API_ROOT_PATH`` goes to FastAPI, which sets the ASGI ``root_path`` but leaves
the request's path as it came. Behind a proxy that strips the prefix (nginx's
``proxy_pass http://api/;`` under ``location /tk/``) the path then lacks it, which routes
tolerate and Starlette's mounts do not: every static file (STAC Browser, the map's
scripts, the API docs' assets) answered 404. The ASGI spec has ``path`` include
``root_path``; this puts the prefix back where it is missing, so both kinds of proxy
work."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class PrefixedPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        root = str(scope.get("root_path") or "").rstrip("/")
        if scope["type"] in ("http", "websocket") and root:
            path = str(scope["path"])
            if path != root and not path.startswith(f"{root}/"):
                scope = dict(scope, path=f"{root}{path}")
                raw = scope.get("raw_path")
                if isinstance(raw, bytes):
                    scope["raw_path"] = root.encode() + raw
        await self.app(scope, receive, send)

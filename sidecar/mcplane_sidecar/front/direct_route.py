"""The hot routes' shortcut past FastAPI's router.

Every relayed message is one request to the MCP path, and every webhook reply one request to a callback
path. On those, FastAPI's exception middleware, its exit-stack middleware, the router and Starlette's
per-route exception wrapper do nothing for us; skipping them saves about 7 of 29-32 us per request
(in-process, docs/performance.md). This middleware sits inside the CORS and header-trimming middleware and
outside all of that; an error escaping an endpoint still reaches the app's handler, in the outermost
ServerErrorMiddleware.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send


class DirectRoutes:
    """ASGI middleware: an HTTP request one of `routes` fully matches (path and method) goes straight to
    that route's endpoint; everything else, a known path with the wrong method included, to the app.

    The routes must also be registered with the app's router, which answers those partial matches."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[Route]) -> None:
        self.app = app
        self.routes = tuple(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)  # path parameters, as the router would set them
                    response = await route.endpoint(Request(scope, receive, send))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

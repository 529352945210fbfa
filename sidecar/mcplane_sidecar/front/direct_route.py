"""The hot routes, served ahead of FastAPI.

Every relayed message is one request to the MCP path, and every webhook reply one request to a callback
path. For those FastAPI's stack does nothing we need: its per-request OpenTelemetry check (which looks up
the global providers every time), its body-limit, exception and exit-stack middleware, the router and the
per-route wrapper. So the sidecar's app puts DirectRoutes in front of all of that (app.py), inside only the
header trimming and CORS, and answers an error escaping an endpoint here as the app's handler would.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcplane_sidecar.front.responses import internal_error


class DirectRoutes:
    """ASGI app: an HTTP request one of `routes` fully matches (path and method) goes straight to that
    route's endpoint; everything else, a known path with the wrong method included, to `app`.

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
                    request = Request(scope, receive, send)
                    try:
                        response = await route.endpoint(request)
                    except Exception as exc:  # our bug: logged, and the client gets a JSON-RPC error
                        response = internal_error(request, exc)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

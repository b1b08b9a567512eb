"""The OpenAPI description is served and true to the routes: every route is described, every
description is a route, and each operation's x-access is the level the app enforces."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

from streamer.server.app import ServerConfig, create_app
from streamer.server.http.access import access_of
from streamer.server.http.openapi import describe_api
from streamer.server.media.runtime import build_runtime
from tests.servers import start_app

REPO = Path(__file__).resolve().parents[1]


def registered(app: web.Application) -> dict[tuple[str, str], str]:
    """(method, path template) -> access level of every route (HEAD mirrors GET)."""
    out = {}
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.get_info()
        path = info.get("formatter") or info["path"]
        out[(route.method, path)] = access_of(route.handler).value
    return out


def described(spec: dict) -> dict[tuple[str, str], str]:
    return {
        (method.upper(), path): op["x-access"]
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }


async def test_every_route_is_described_and_every_description_is_a_route() -> None:
    runtime = build_runtime(REPO / "avatars")
    app = create_app(ServerConfig(), runtime)
    routes, spec = registered(app), described(describe_api())
    assert routes.keys() - spec.keys() == set(), "routes missing from openapi.py"
    assert spec.keys() - routes.keys() == set(), "described routes that do not exist"
    assert routes == spec  # and the documented access level is the enforced one
    runner, url = await start_app(app)
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/openapi.json") as r:
            assert r.status == 200
            served = await r.json()
        assert served == describe_api()
        assert served["openapi"].startswith("3.1")
    finally:
        await runner.cleanup()


def test_every_operation_documents_its_errors_as_the_one_error_shape() -> None:
    spec = describe_api()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, method)
            if op["x-access"] != "public":
                assert "401" in op["responses"], (path, method)
                assert "429" in op["responses"], (path, method)  # a locked-out guesser

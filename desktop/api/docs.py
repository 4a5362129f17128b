"""The REST server's documentation: /docs and /redoc served offline, and the OpenAPI schema completed with
the request bodies that routes parse themselves and the answers of the middleware."""

import os
from typing import Optional

from . import security

DOCS_ASSETS = "/docs-assets"


def docs_assets_dir() -> Optional[str]:
    """The folder of Swagger UI's and ReDoc's script, style sheet and icon: the `static` folder of the
    installed fastapi-offline package (MIT; Swagger UI is Apache-2.0, ReDoc MIT). None when it is missing."""
    import importlib.util

    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "static")
    needed = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
    return folder if all(os.path.isfile(os.path.join(folder, n)) for n in needed) else None


def add_docs_routes(app) -> None:
    """/docs (Swagger UI) and /redoc with their files served by this server, so that they work offline and
    no visit calls out to a CDN, and / redirecting to /docs. Plain routes: they stay open when a token is set, like
    /openapi.json."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from starlette.responses import PlainTextResponse, RedirectResponse
    from starlette.staticfiles import StaticFiles

    async def home(request):
        # Someone who opens the server's address in a browser lands on what it can do, not on a 404.
        return RedirectResponse("/docs", status_code=307)
    app.router.add_route("/", home, include_in_schema=False)
    folder = docs_assets_dir()
    if folder is None:
        async def missing(request):
            return PlainTextResponse("The API docs pages need the fastapi-offline package, which is not installed: "
                                     "run the installer again (./run.sh --update, or run.bat --update). The "
                                     "OpenAPI schema is at /openapi.json.", status_code=503)
        app.router.add_route("/docs", missing, include_in_schema=False)
        app.router.add_route("/redoc", missing, include_in_schema=False)
        return
    app.mount(DOCS_ASSETS, StaticFiles(directory=folder), name="docs-assets")
    title = f"{app.title} {app.version}"

    def offline(page):
        # Whatever the scripts would still fetch from elsewhere (ReDoc's sidebar logo comes from its CDN), the
        # browser does not even ask for: only this server (and inline/data/blob parts of the page itself).
        page.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")
        return page

    async def swagger_ui(request):
        return offline(get_swagger_ui_html(
            openapi_url=app.openapi_url, title=title + " - docs",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            # No badge from the online validator (swagger.io) either.
            swagger_ui_parameters={"validatorUrl": None}))

    async def redoc(request):
        return offline(get_redoc_html(openapi_url=app.openapi_url, title=title + " - ReDoc",
                                      redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                                      redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False))
    app.router.add_route("/docs", swagger_ui, include_in_schema=False)
    app.router.add_route("/redoc", redoc, include_in_schema=False)


def _declare_middleware_answers(schema: dict) -> None:
    """The answers of the middleware, on the operations where they can happen: 403 (CrossSiteGuard) on
    every state-changing method, 408 (BodyReadTimeout) wherever a request body is read."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    words = {403: "cross-site request refused: a web page of another origin (add it with --allow-origin, or "
                  "send the token)",
             408: f"the request body stopped arriving ({security.BODY_READ_TIMEOUT_S:g} s without a byte)"}
    for operations in schema.get("paths", {}).values():
        for method, op in operations.items():
            unsafe = method.upper() in security.UNSAFE_METHODS
            codes = ([403] if unsafe else []) + ([408] if "requestBody" in op else [])
            for code in codes:
                op.setdefault("responses", {}).setdefault(str(code), {"description": words[code], "content": error})


def register_schemas(app, request_models: list) -> None:
    """Add the request schemas of bodies that routes parse themselves (referenced from openapi_extra)."""
    build = app.openapi

    def openapi():
        if app.openapi_schema is None:
            schema = build()
            comps = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in request_models:
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                comps.update(js.pop("$defs", {}))
                comps[model.__name__] = js
            _declare_middleware_answers(schema)
        return app.openapi_schema
    app.openapi = openapi


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------

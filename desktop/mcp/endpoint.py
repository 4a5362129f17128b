"""/mcp on the REST server (`python -m desktop api`, or `python -m desktop mcp --http`): the MCP server over streamable
HTTP, on the API's port, over the API's job runner, behind the API's rules.

Why inside the REST server rather than a server of its own: one process holds the model and the GPU, and one queue
orders every job whoever sends it (a REST client, StableProjectorz, an agent); a second server would load the model
again and race the first for the GPU. The REST app's middleware applies to /mcp as to every path (the Host check
without a token, the cross-site guard, body deadlines, the wait for the runner); the token, which FastAPI checks only
on its own routes, is checked here the same way (Authorization: Bearer TOKEN or X-API-Key: TOKEN, else 401).
The SDK's session manager needs a running task group, which a server started without a lifespan never opens: it
is started by the first /mcp request, on the server's own event loop, and lives as long as that loop.
"""
import asyncio
import secrets

from ..api.security import token_given

MCP_PATH = "/mcp"


class McpEndpoint:
    """ASGI app of MCP_PATH: the token checked, then the request handed to the SDK's streamable HTTP session manager
    (made on first use over the app's runner; 503 with the reason when the mcp package is missing)."""

    def __init__(self):
        self.manager = None
        self.error = None
        self.ready = None            # asyncio.Event: the manager is running (or could not start: self.error)
        self.task = None             # the task that holds the manager's task group open

    async def __call__(self, scope, receive, send):
        from starlette.datastructures import Headers
        from starlette.responses import JSONResponse

        state = scope["app"].state.api
        if state.token is not None:
            given = token_given(Headers(scope=scope))
            if not given or not secrets.compare_digest(given.encode("utf-8"), state.token.encode("utf-8")):
                answer = JSONResponse({"detail": "a valid token is required: send 'Authorization: Bearer TOKEN' or "
                                                 "'X-API-Key: TOKEN' (the token the server was started with)"},
                                      status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await answer(scope, receive, send)
                return
        if self.ready is None:
            self.ready = asyncio.Event()
            self.task = asyncio.get_running_loop().create_task(self.serve(state))
        await self.ready.wait()
        if self.error is not None:
            await JSONResponse({"detail": self.error}, status_code=503)(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)

    async def serve(self, state) -> None:
        try:
            from mcp.server.transport_security import TransportSecuritySettings

            from .tools import build_server, runner_getter

            server = build_server(runner_getter(state.runner), state.defaults, local_files=False)
            # The Host and Origin checks are the REST app's (its middleware): the SDK's own would refuse every
            # Host but localhost's, also on a server bound to the network with a token.
            server.streamable_http_app(streamable_http_path=MCP_PATH, transport_security=TransportSecuritySettings(
                enable_dns_rebinding_protection=False))
            manager = server.session_manager
        except ImportError as err:
            self.error = (f"the MCP server needs the `mcp` package ({err}): run the installer again (./run.sh "
                          "--update, or run.bat --update)")
        except Exception as err:                  # answered, not left waiting: the REST API goes on
            self.error = f"the MCP server could not start: {err}"
        if self.error is not None:
            self.ready.set()
            return
        async with manager.run():
            self.manager = manager
            self.ready.set()
            await asyncio.Event().wait()          # until the server's loop ends


def add_mcp_route(app) -> None:
    """Serve MCP at MCP_PATH (GET, POST, DELETE: the streamable HTTP transport), outside the OpenAPI schema."""
    app.router.add_route(MCP_PATH, McpEndpoint(), methods=["GET", "POST", "DELETE"], include_in_schema=False)

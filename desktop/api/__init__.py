"""The REST API server (`python -m desktop api`), one module per concern, imported one way:

    common   <- families <- v1_schemas <- v1, spz_trellis2;  common <- spz_params;  spz_params, spz_trellis2 <- spz;
    security <- docs <- server;  openai_errors <- generations <- server

common: what both families of endpoints share (limits, errors, body reading, validation, settings of a
request); families: the model families a server can run and a request's `model_family` checked against them; v1: the /v1
job API's routes (v1_schemas: its requests and responses, pydantic); spz: the StableProjectorz endpoints (spz_params:
that app's parameter names, the request schemas and the panel; spz_trellis2: TRELLIS.2 there); generations:
POST /v1/3d/generations, the OpenAI-style endpoint of the local AI servers (openai_errors: its errors in the OpenAI
shape); security: origins, tokens and the middleware; docs: /docs, /redoc and the OpenAPI schema; server: create_app
and the command (main); connections: uvicorn's HTTP protocol with header and body deadlines and connection limits
(imports none of the others: the browser app's server uses it too).
The names below stay importable as `desktop.api.X`; patch a value where it is read (e.g.
desktop.api.security.BODY_READ_TIMEOUT_S, desktop.api.common.MAX_IMAGE_BYTES).
"""

from .common import (ERROR_STATUS, MAX_IMAGE_BYTES, MAX_IMAGES, MAX_JSON_DEPTH, POLL_S, ApiError,  # noqa: F401
                     ServerDefaults, json_depth)
from .security import BODY_READ_TIMEOUT_S, CrossSiteGuard, is_loopback, origin_arg, parse_origin  # noqa: F401
from .server import (DEFAULT_HOST, DEFAULT_PORT, MAX_BODY_BYTES, ApiState, bind_socket, build_parser,  # noqa: F401
                     create_app, main)
from .v1 import API_VERSION, CONTENT_TYPES, job_info  # noqa: F401
from .v1_schemas import models  # noqa: F401

"""What both families of REST endpoints share (v1.py's /v1 job API and spz.py's
StableProjectorz endpoints): limits, the error answer, request body reading and validation, the settings
of a request, the OpenAPI pieces. Both import it; it imports neither, so they depend on it one way.
"""
import asyncio
import base64
import binascii
import contextlib
import functools
import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union, get_args

from starlette.exceptions import HTTPException as _StarletteHTTPException

from ..jobs.jsonio import MAX_JSON_DEPTH, json_depth  # noqa: F401  (the API's names for them)
from ..settings import DEFAULT_PRESET, PRESETS, ROWS, SETTINGS, GenerationSettings, with_given

MAX_IMAGES = 16                         # per job (several views of one object)
MAX_IMAGE_BYTES = 64 * 1024 * 1024      # per image file
POLL_S = 0.1                            # how often a waiting request looks at its job

# HTTP status of a job's failure, for the endpoints that answer when the job has ended.
ERROR_STATUS = {"input": 422, "empty": 422, "cancelled": 499, "oom": 507, "disk": 507, "model": 503,
                "background_removal": 503, "interrupted": 503, "internal": 500}


class BodyTimeout(_StarletteHTTPException):
    """The request body stopped arriving (BODY_READ_TIMEOUT_S without a byte). An HTTPException so that
    FastAPI's own body parsing lets it through (it turns other errors into a 400)."""

    def __init__(self):
        super().__init__(408)


class BodyTooLarge(_StarletteHTTPException):
    """The request body grew past the server's limit while it was read (server.BodyLimit answers the 413). An
    HTTPException so that FastAPI's own body parsing lets it through."""

    def __init__(self):
        super().__init__(413)


class ApiError(Exception):
    """An error answer: HTTP status, a message (or FastAPI-style list of problems), extra fields and headers."""

    def __init__(self, http_status: int, detail, headers: Optional[dict] = None, **extra):
        super().__init__(detail if isinstance(detail, str) else "invalid request")
        self.http_status, self.detail, self.extra, self.headers = http_status, detail, extra, headers


def not_queued(err: RuntimeError) -> ApiError:
    """The answer to a job the runner would not queue: 429 with Retry-After when its queue is full
    (jobqueue.QueueFullError: the server's --max-queued), 507 with error_kind disk when it could not be written down
    (queued.NotRecordedError: the outputs folder's disk is full), else 503 (the runner is shutting down)."""
    from ..jobs.jobqueue import QueueFullError
    from ..jobs.queued import NotRecordedError

    if isinstance(err, QueueFullError):
        return ApiError(429, str(err), headers={"Retry-After": str(err.retry_after_s)}, error_kind="queue_full")
    if isinstance(err, NotRecordedError):
        return ApiError(507, str(err), error_kind=err.error_kind)
    return ApiError(503, str(err))


# ---------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------

def rule_type(name: str):
    """(annotation, constraints) of a generation setting, from its row (settings_table.ROWS)."""
    row = SETTINGS[name]
    if row.kind == "int":
        kind, limits = int, {"ge": row.lo, "le": row.hi}
    elif row.kind == "float":
        kind, limits = float, {"ge": row.lo, "le": row.hi, "allow_inf_nan": False}
    elif row.kind == "bool":
        kind, limits = bool, {}
    elif row.kind == "choices":
        kind, limits = list[Literal[row.choices]], {"min_length": 1, "max_length": len(row.choices)}
    else:
        kind, limits = Literal[tuple(row.choices) if row.kind == "choice" else (*PRESETS, "custom")], {}
    return (Optional[kind] if row.optional else kind), limits


def parameter_fields(skip=()) -> dict:
    """pydantic field definitions of every generation setting, all optional (None: not given)."""
    from pydantic import BeforeValidator, Field

    fields = {"preset": (Optional[Literal[tuple(PRESETS)]],
                         Field(None, description=f"start from this preset (default: the server's, "
                                                 f"normally {DEFAULT_PRESET}); the other fields override it"))}
    for row in ROWS:
        if row.kind == "preset":
            continue
        kind, limits = rule_type(row.name)
        if row.kind == "choices":
            example = f"{row.choices[0]},{row.choices[-1]}"
            fields[row.name] = (Annotated[Optional[kind], BeforeValidator(split_names)],
                                Field(None, description=f'{row.help} (a list, or one comma-separated string: '
                                                        f'"{example}")', **limits))
        else:
            fields[row.name] = (Optional[kind], Field(None, description=row.help, **limits))
    return {k: v for k, v in fields.items() if k not in skip}


def split_names(value):
    """A list field given as one comma-separated string ("glb,mp4", as a form sends it) -> its items; each
    item of a list is split the same way. Anything else is left to the field's own validation."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [x.strip() for v in value for x in v.split(",") if x.strip()]
    return value


def error_responses(*codes: int) -> dict:
    """OpenAPI `responses` entries for error statuses (all share the ErrorBody schema)."""
    words = {400: "unreadable request body", 401: "token missing or wrong", 404: "no such job or file",
             409: "not possible in the job's current state", 413: "request body too large",
             415: "body is neither JSON nor a form", 422: "invalid parameters or an unusable image",
             429: "the job queue is full: try again after the Retry-After header's seconds",
             499: "cancelled", 500: "unexpected failure", 503: "busy, or the model cannot be loaded",
             507: "out of memory or disk space"}
    return {c: {"model": error_body_model(), "description": words[c]} for c in codes}


@functools.cache
def error_body_model():
    """The body of every error answer."""
    from pydantic import BaseModel, Field

    class ErrorBody(BaseModel):
        detail: Union[str, list[dict[str, Any]]] = Field(description="the message, or one entry per invalid field")
        error_kind: Optional[str] = None
        job_id: Optional[str] = None
        status: Optional[str] = None
    return ErrorBody


def binary_content(*types: str) -> dict:
    """OpenAPI `content` of a file download: application/octet-stream first, then `types`. Generated
    clients read a response as the first type they know, and most know only octet-stream among the binary
    ones (they would drop a model/gltf-binary answer, or parse model.glb as JSON when JSON came first)."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {"application/octet-stream": binary, **{t: binary for t in types if t != "application/octet-stream"}}


def form_schema(model, files: Optional[dict] = None, required=()) -> dict:
    """A multipart/form-data or urlencoded request schema from a pydantic model: optional fields are
    simply left out (no null), `files` adds file fields ({name: "one" | "many"})."""
    props = {}
    for name, prop in model.model_json_schema()["properties"].items():
        prop = dict(prop)
        if "anyOf" in prop:
            options = [o for o in prop.pop("anyOf") if o.get("type") != "null"]
            prop.update(options[0] if len(options) == 1 else {"anyOf": options})
        prop.pop("default", None)
        props[name] = prop
    for name, count in (files or {}).items():
        binary = {"type": "string", "format": "binary"}
        props[name] = binary if count == "one" else {
            "type": "array", "minItems": 1, "maxItems": MAX_IMAGES, "items": binary,
            "description": "image files (repeat the field for several views of one object)"}
    return {"type": "object", "required": list(required), "properties": props}


# ---------------------------------------------------------------------------------------------
# Server state
# ---------------------------------------------------------------------------------------------

@dataclass
class ServerDefaults:
    """What the server fills in when a request does not say (command-line options)."""
    preset: str = DEFAULT_PRESET
    precision: str = "auto"
    offload: str = "auto"
    vram_budget: Optional[float] = None     # GiB; None: no budget

# ---------------------------------------------------------------------------------------------
# Request helpers
# ---------------------------------------------------------------------------------------------

def decode_base64(text: str, where: str, what: str = "image") -> bytes:
    """base64 (standard or URL-safe, padding optional, a data: URL prefix allowed) -> bytes; `what` names the
    file in the messages ("image", "3-D model")."""
    if not isinstance(text, str):
        raise ApiError(422, f"{where}: expected a base64 string")
    s = text.strip()
    if s.startswith("data:"):
        head, sep, s = s.partition(",")
        if not sep or ";base64" not in head:
            raise ApiError(422, f"{where}: a data: URL must be base64 (data:image/png;base64,...)")
    s = "".join(s.split()).replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        data = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, f"{where}: not valid base64 (send the {what} file's bytes base64-encoded)") from None
    if not data:
        raise ApiError(422, f"{where}: the {what} is empty")
    return data


async def read_form(request) -> dict:
    """The form fields of a multipart or urlencoded body: name -> list of str / UploadFile. A multipart body must
    reach its closing boundary (400 otherwise): one cut short would lose its last part without a word."""
    from starlette.requests import ClientDisconnect

    limits = {"max_files": MAX_IMAGES * 2, "max_fields": 200, "max_part_size": MAX_IMAGE_BYTES * 2}
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    parser = None
    try:
        if ctype == "multipart/form-data":
            async with contextlib.aclosing(request.stream()) as stream:
                parser = whole_form_parser()(request.headers, stream, **limits)
                form = await parser.parse()
        else:
            form = await request.form(**limits)
    except (BodyTimeout, BodyTooLarge, ClientDisconnect):
        raise
    except Exception as err:          # malformed multipart, too many parts, ...
        detail = getattr(err, "detail", None) or getattr(err, "message", None) or str(err)
        raise ApiError(400, f"the form could not be read: {detail}") from None
    if parser is not None and not parser.ended:
        await form.close()
        raise ApiError(400, "the form ends before its closing boundary: the upload was cut short (its last part "
                            "is missing or incomplete); send the whole form again")
    out: dict = {}
    for key, value in form.multi_items():
        out.setdefault(key, []).append(value)
    return out


@functools.cache
def whole_form_parser():
    """Starlette's multipart parser that tells whether the body reached its closing boundary (`ended`):
    python-multipart calls on_end only there, and at the body's end accepts a form cut short as it stands."""
    from starlette.formparsers import MultiPartParser

    class WholeFormParser(MultiPartParser):
        ended = False

        def on_end(self) -> None:
            super().on_end()
            self.ended = True
    return WholeFormParser


async def read_body(request, forms: bool = True) -> tuple:
    """("json", object) or ("form", {name: [values]}) from a request body; 400 / 415 otherwise
    (forms=False: only JSON)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not forms and not (ctype == "application/json" or ctype.endswith("+json")):
        raise ApiError(415, f"send this endpoint a JSON body (Content-Type: application/json), not "
                            f"{ctype or 'a body without Content-Type'}")
    if ctype == "application/json" or ctype.endswith("+json"):
        raw = await request.body()
        # In a thread: a body of hundreds of MB takes seconds to scan, and other requests must not wait.
        if await asyncio.to_thread(json_depth, raw) > MAX_JSON_DEPTH:
            raise ApiError(422, [{"loc": ["body"], "msg": f"JSON nested more than {MAX_JSON_DEPTH} levels deep; a "
                                  "request is an object of settings and lists of base64 images (2 levels)",
                                  "type": "json_invalid"}])
        try:
            return "json", json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise ApiError(422, [{"loc": ["body"], "msg": f"invalid JSON: {err}", "type": "json_invalid"}]) from None
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return "form", await read_form(request)
    raise ApiError(415, f"send the job as multipart/form-data (image files) or application/json (base64 images), "
                        f"not {ctype or 'a body without Content-Type'}")


async def upload_bytes(value, where: str) -> bytes:
    """An uploaded file (UploadFile) or a base64 string -> the image bytes (size-checked)."""
    if isinstance(value, str):
        data = decode_base64(value, where)
    else:
        data = await value.read(MAX_IMAGE_BYTES + 1)
        if not data:
            raise ApiError(422, f"{where}: the uploaded file is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ApiError(413, f"{where}: the image file is larger than {MAX_IMAGE_BYTES // 2 ** 20} MB; "
                            "downscale or recompress it")
    return data


def form_values(form: dict, list_fields=None, skip=()) -> dict:
    """Form fields -> plain values for validation: one value per field (a repeated field is an error),
    list fields split on commas (given but empty: an error), other empty values treated as not given."""
    list_fields = LIST_FIELDS if list_fields is None else list_fields
    out = {}
    for key, values in form.items():
        if key in skip:
            continue
        if any(not isinstance(v, str) for v in values):
            raise ApiError(422, [{"loc": ["body", key], "msg": "expected a text field, got a file",
                                  "type": "value_error"}])
        if key in list_fields:
            items = [x.strip() for v in values for x in v.split(",") if x.strip()]
            if not items:
                raise ApiError(422, [{"loc": ["body", key], "msg": _EMPTY_LIST.get(key, "give at least one value"),
                                      "type": "too_short"}])
            out[key] = items
            continue
        if len(values) > 1:
            raise ApiError(422, [{"loc": ["body", key], "msg": "given more than once", "type": "value_error"}])
        if values[0].strip() != "":
            out[key] = values[0].strip()
    return out


# The settings whose value is a list ("choices"), and what an empty one is told.
LIST_FIELDS = tuple(row.name for row in ROWS if row.kind == "choices")
_EMPTY_LIST = {row.name: f"choose at least one of {', '.join(row.choices)} (a list, or comma-separated)"
               for row in ROWS if row.kind == "choices"}


def problem(loc: list, msg: str, kind: str) -> dict:
    """One entry of a 422's list, with our words where pydantic's mislead."""
    if kind == "finite_number":
        msg = "not a number (NaN or infinity): give a finite number"
    elif kind == "too_short" and loc and loc[-1] in _EMPTY_LIST:
        msg = _EMPTY_LIST[loc[-1]]
    elif kind in ("int_type", "float_type", "bool_type", "string_type") and msg.startswith("Input should be"):
        msg += " (true, false and quoted numbers are not numbers here)" if kind != "bool_type" else " (true or false)"
    return {"loc": loc, "msg": msg, "type": kind}


def validate(model, data, loc_prefix=("body",), strict: bool = False, whole_floats: bool = False):
    """model.model_validate(data), a failure -> 422 with one entry per problem. strict (JSON bodies):
    no true for a number, no 1 or "yes" for a boolean, no "5" for a number; forms are text, read laxly.
    whole_floats: a float with nothing after the point (12.0) counts as the integer for integer fields."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise ApiError(422, [{"loc": list(loc_prefix), "msg": "expected a JSON object", "type": "dict_type"}])
    problems = []
    if whole_floats:
        data, problems = whole_numbers(model, data, loc_prefix)
    try:
        validated = model.model_validate(data, strict=strict)
    except ValidationError as err:
        reported = {tuple(p["loc"]) for p in problems}          # a fractional 12.5: said once, in our words
        problems += [problem([*loc_prefix, *e["loc"]], e["msg"], e["type"])
                     for e in err.errors(include_url=False, include_context=False, include_input=False)
                     if (*loc_prefix, *e["loc"]) not in reported]
        validated = None
    if problems:
        raise ApiError(422, problems)
    return validated


def integer_fields(model) -> set:
    """Names of a pydantic model's fields that take an integer (int or Optional[int])."""
    out = set()
    for name, info in model.model_fields.items():
        kinds = get_args(info.annotation) or (info.annotation,)
        if int in kinds:
            out.add(name)
    return out


def whole_numbers(model, data: dict, loc_prefix=("body",)) -> tuple:
    """(data with whole floats of integer fields made ints, problems for the other finite floats there).
    Clients whose number inputs are floats (StableProjectorz's sliders) write 12 as 12.0."""
    ints = integer_fields(model)
    out, problems = dict(data), []
    for name, value in data.items():
        if name not in ints or not isinstance(value, float) or not math.isfinite(value):
            continue
        if value.is_integer():
            out[name] = int(value)
        else:
            problems.append({"loc": [*loc_prefix, name], "msg": f"{name} takes a whole number, got {value!r} "
                             f"(12 or 12.0 are accepted, 12.5 is not)", "type": "int_from_float"})
    return out, problems


async def check_images(images: list, preprocess: bool, names: list) -> None:
    """422 with the reason when an image cannot be used (read off the event loop)."""
    from starlette.concurrency import run_in_threadpool

    from ..jobs import InputError, check_image

    for data, name in zip(images, names, strict=True):
        try:
            await run_in_threadpool(check_image, data, preprocess)
        except InputError as err:
            raise ApiError(422, f"{name}: {err}") from None


def build_settings(params: dict, defaults: ServerDefaults) -> GenerationSettings:
    """A job's settings: the preset (the server's by default), the server's precision / offload unless
    the request or its preset sets them, then the request's own values (settings.with_given, as the CLI's
    settings_from_args). Invalid -> 422."""
    params = {k: v for k, v in params.items() if v is not None}
    preset = params.pop("preset", None) or defaults.preset
    for name in ("precision", "offload", "vram_budget"):
        server = getattr(defaults, name)
        if name not in params and name not in PRESETS.get(preset, {}) and server not in ("auto", None):
            params[name] = server
    if "formats" in params:
        params["formats"] = tuple(params["formats"])
    try:
        return with_given(GenerationSettings.from_preset(preset), params)
    except ValueError as err:
        raise ApiError(422, str(err)) from None


def api_state(request):
    return request.app.state.api

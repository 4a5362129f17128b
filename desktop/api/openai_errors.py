"""Error answers as JSON on every path (ErrorBodies): in the OpenAI shape on the OpenAI-style endpoints
(generations.py): `{"error": {"message", "type", "param", "code"}}`, the body those servers' clients read, whoever
answered: the route itself, the token check, the cross-site guard, the body read timeout or the queue bound. The rest of the REST API
keeps its `{"detail": ...}` answers, and one that a framework part wrote as text (the Host check's "Invalid host
header", CORS's refusal, ...) is sent as `{"detail": that text}`: a client parsing every answer as JSON never fails.
"""
import functools
import json
import logging
from typing import Optional

OPENAI_PATHS = ("/v1/3d/", "/3d/")       # the paths whose error answers are in the OpenAI shape

# The error's `type` by HTTP status (what the OpenAI API and its local imitators send); anything else 4xx:
# invalid_request_error.
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
               429: "rate_limit_error"}
CODES = {401: "invalid_api_key", 403: "cross_site_request", 408: "request_timeout", 413: "request_too_large",
         415: "unsupported_media_type", 429: "queue_full"}


@functools.cache
def error_model():
    """The body of every error answer of the OpenAI-style endpoints (for the OpenAPI schema)."""
    from pydantic import BaseModel, Field

    class OpenAIErrorDetail(BaseModel):
        message: str = Field(description="what went wrong and what to do")
        type: str = Field(description="invalid_request_error, authentication_error, permission_error, "
                                      "rate_limit_error or server_error")
        param: Optional[str] = Field(description="the request field at fault (null: the request as a whole)")
        code: Optional[str] = Field(description="a machine-readable reason: a job's error_kind (input, oom, ...), a "
                                                "validation error's type, invalid_api_key, queue_full, ...")
        job_id: Optional[str] = Field(None, description="the job that failed, when one did")

    class OpenAIError(BaseModel):
        error: OpenAIErrorDetail
    return OpenAIError


def openai_error_responses(*codes: int) -> dict:
    """OpenAPI `responses` entries of error statuses, all in the OpenAI shape."""
    words = {400: "invalid request: a field, an image or the prompt (the message names it)",
             401: "token missing or wrong", 403: "cross-site request refused", 404: "no such generation",
             408: "the request body came too slowly", 413: "request body too large",
             415: "body is neither JSON nor a form", 429: "the job queue is full: try again after Retry-After seconds",
             499: "the job was cancelled", 500: "unexpected failure", 503: "the model cannot be loaded, or the server "
             "is stopping", 507: "out of memory or disk space"}
    return {c: {"model": error_model(), "description": words[c]} for c in codes}


def problem_text(problem: dict) -> str:
    """One entry of a validation error list as text: 'field: message'."""
    field = ".".join(str(p) for p in problem.get("loc", []) if p not in ("body", "query", "path"))
    return f"{field}: {problem.get('msg', '')}" if field else str(problem.get("msg", ""))


def openai_body(status: int, payload) -> tuple:
    """(status, body dict) in the OpenAI shape from one of the server's error bodies ({"detail": ..., **extra})."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return status, payload
    payload = payload if isinstance(payload, dict) else {"detail": str(payload)}
    detail = payload.get("detail", "")
    param = code = None
    if isinstance(detail, list):                    # validation: one entry per field
        problems = [p for p in detail if isinstance(p, dict)]
        message = "; ".join(problem_text(p) for p in problems) or "invalid request"
        if problems:
            fields = [str(p) for p in problems[0].get("loc", []) if p not in ("body", "query", "path")]
            param, code = (fields[0] if fields else None), problems[0].get("type")
    else:
        message = str(detail)
    if status == 422:                              # OpenAI-style clients expect a bad request to be a 400
        status = 400
    error = {"message": message, "type": "server_error" if status >= 500 else ERROR_TYPES.get(
        status, "invalid_request_error"), "param": param,
        "code": payload.get("error_kind") or code or CODES.get(status)}
    error.update({k: v for k, v in payload.items() if k not in ("detail", "error_kind") and v is not None})
    return status, {"error": error}


def is_json(headers) -> bool:
    ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"").split(b";")[0].strip().lower()
    return ctype == b"application/json" or ctype.endswith(b"+json")


class ErrorBodies:
    """ASGI middleware: an answer of status 400 or more is sent in the OpenAI shape on OPENAI_PATHS (openai_body; a
    body that is not JSON becomes the message), and elsewhere as `{"detail": text}` when its body is not JSON; its
    headers (Retry-After, WWW-Authenticate) kept. Other answers (and HEAD's, which have no body) pass through
    untouched, streamed."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        openai = scope["path"].startswith(OPENAI_PATHS)
        held = None
        body = bytearray()
        ended = began = False

        async def through(message):
            nonlocal ended, began
            began = True
            await send(message)
            ended = ended or (message["type"] == "http.response.body" and not message.get("more_body", False))

        async def rewrite(message):
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400 and (
                    openai or not is_json(message.get("headers", []))):
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await through(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            try:
                payload = json.loads(bytes(body)) if body else None
            except ValueError:
                payload = None
            if payload is None or not openai:
                text = bytes(body).decode("utf-8", "replace").strip()
                payload = {"detail": text or f"HTTP {held['status']}"}
            status, out = openai_body(held["status"], payload) if openai else (held["status"], payload)
            data = json.dumps(out).encode("utf-8")
            headers = [(k, v) for k, v in held.get("headers", []) if k.lower() not in (b"content-length",
                                                                                         b"content-type")]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await through({"type": "http.response.body", "body": data})
        try:
            await self.app(scope, receive, rewrite)
        except Exception as err:
            # Answered and logged here: raised on, Starlette's 500 would reach uvicorn with the error, and uvicorn
            # closes the connection under the client's feet (a reset that can eat the answer itself).
            logging.getLogger("uvicorn.error").exception("unexpected error in %s %s", scope["method"], scope["path"])
            if held is not None or began:
                if not ended:
                    raise                # an answer under way cannot be mended: uvicorn cuts it
                return
            data = json.dumps({"detail": f"unexpected error ({type(err).__name__}): the server's log has the "
                                         "details", "error_kind": "internal"}).encode("utf-8")
            await rewrite({"type": "http.response.start", "status": 500,
                           "headers": [(b"content-type", b"application/json"),
                                       (b"content-length", str(len(data)).encode())]})
            await rewrite({"type": "http.response.body", "body": data})

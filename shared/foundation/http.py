"""One HTTP vocabulary for every route: the reply type, the JSON body parser and the error
formatter. Decisions in shared/ return a `Reply`; the handler turns it into an HttpResponse with
`respond`.

Cheap to import (json and azure.functions): every handler module may import it at module level.
pydantic loads inside `parse_body`, on the first request that needs it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import azure.functions as func

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound="BaseModel")
JSON = "application/json"
HTML = "text/html"


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, body, extra headers. The body is JSON-encoded unless the content
    type says otherwise (then it is text, e.g. an HTML page); None sends no body at all."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = JSON

    @property
    def ok(self) -> bool:
        return self.status < 400


class BodyError(ValueError):
    """The request body is not what the route takes; `problems` name each field that is wrong,
    as 'where: what' ('body' for the whole body)."""

    def __init__(self, message: str, problems: list[str] | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.problems = problems or []
        self.status = status

    def reply(self) -> Reply:
        return error_reply(self.status, self.message, self.problems)


def error_reply(status: int, message: str, problems: list[str] | None = None,
                headers: Mapping[str, str] | None = None) -> Reply:
    body: dict[str, Any] = {"error": message}
    if problems:
        body["problems"] = problems
    return Reply(status, body, dict(headers or {}))


def unavailable(message: str, retry_after: float = 5) -> Reply:
    """A 503 that tells the caller when to try again."""
    return error_reply(503, message, headers={"Retry-After": str(max(1, int(retry_after + 0.999)))})


def too_large(size: int, limit: int) -> Reply:
    return error_reply(413, f"request body is {size} bytes; the limit is {limit} "
                            f"(GATEHOUSE_MAX_BODY_BYTES)")


def content_type_problem(content_type: str | None) -> str | None:
    """What is wrong with a request's Content-Type for a JSON body (None: fine or absent)."""
    if not content_type or not content_type.strip():
        return None
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == JSON or media_type.endswith("+json"):
        return None
    return f"Content-Type {media_type!r} is not supported; send {JSON}"


def validation_problems(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per invalid field: 'where: what is wrong' (where 'body' for the whole body)."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        problems.append(f"{where or 'body'}: {item['msg']}")
    return problems


def json_document(body: bytes | None) -> Any:
    """The body as JSON; BodyError saying what is wrong with it otherwise."""
    if not body or not body.strip():
        raise BodyError("request body is empty; expected a JSON object", ["body: Field required"])
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"request body is not valid UTF-8 (byte {exc.start})",
                        [f"body: not UTF-8 (byte {exc.start})"]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise BodyError(f"request body is not valid JSON: {where}",
                        [f"body: not JSON ({where})"]) from None
    except RecursionError:
        raise BodyError("request body is nested too deeply to be read as JSON",
                        ["body: nested too deeply"]) from None


def json_object(body: bytes | None) -> dict[str, Any]:
    """The body as a JSON object; BodyError otherwise."""
    document = json_document(body)
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise BodyError(f"request body must be a JSON object, not {kind}",
                        [f"body: a JSON object is expected, not {kind}"])
    return document


def validate(model: type[Model], document: object, prefix: str = "",
             what: str = "request body") -> Model:
    """`document` validated by a pydantic model; BodyError naming each bad field otherwise.
    A model may describe its shape in an `EXPECTED` class variable, which the error quotes."""
    from pydantic import ValidationError

    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = validation_problems(exc, prefix)
        expected = getattr(model, "EXPECTED", None)
        hint = f" (expected {expected})" if expected else ""
        raise BodyError(f"{what} is not valid{hint}: " + "; ".join(problems), problems) from None
    except RecursionError:
        raise BodyError(f"{what} is nested too deeply", ["body: nested too deeply"]) from None


def parse_body(model: type[Model], body: bytes | None, optional: bool = False) -> Model:
    """The body validated by a pydantic model; BodyError (a 400 naming each bad field) otherwise.
    With `optional`, an empty body is the model's defaults."""
    if optional and not (body or b"").strip():
        return validate(model, {})
    return validate(model, json_object(body))


def respond(reply: Reply) -> func.HttpResponse:
    headers = dict(reply.headers)
    if reply.body is None:
        return func.HttpResponse(status_code=reply.status, headers=headers)
    text = json.dumps(reply.body, default=str) if reply.content_type == JSON else reply.body
    return func.HttpResponse(text, status_code=reply.status, headers=headers,
                             mimetype=reply.content_type)

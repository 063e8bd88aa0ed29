"""One HTTP vocabulary for every route: the reply type, the JSON body parser and the error
formatter. Decisions in shared/ return a `Reply`; the handler turns it into an HttpResponse with
`respond`. Cheap to import: pydantic and azure.functions only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import azure.functions as func
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, JSON body, extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status < 400


class BodyError(ValueError):
    """The request body is not what the route takes; `problems` name each field that is wrong."""

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


def unavailable(message: str, retry_after: float) -> Reply:
    """A 503 that tells the caller when to try again."""
    return error_reply(503, message, headers={"Retry-After": str(max(1, int(retry_after + 0.999)))})


def validation_problems(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per invalid field: 'where: what is wrong' (where 'body' for the whole body)."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        problems.append(f"{where or 'body'}: {item['msg']}")
    return problems


def json_document(body: bytes) -> Any:
    """The body as JSON; BodyError saying what is wrong with it otherwise."""
    if not body or not body.strip():
        raise BodyError("request body is empty; expected a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BodyError(f"request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                        f"column {exc.colno}") from None
    except RecursionError:
        raise BodyError("request body is nested too deeply") from None


def parse_body(model: type[Model], body: bytes, optional: bool = False) -> Model:
    """The body validated by a pydantic model; BodyError (a 400 naming each bad field) otherwise.
    With `optional`, an empty body is the model's defaults."""
    if optional and not (body or b"").strip():
        return model()
    document = json_document(body)
    if not isinstance(document, dict):
        raise BodyError(f"request body must be a JSON object, not {type(document).__name__}")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise BodyError("request body is not valid", validation_problems(exc)) from None


def respond(reply: Reply) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(reply.body, default=str), status_code=reply.status,
                             headers=reply.headers, mimetype="application/json")

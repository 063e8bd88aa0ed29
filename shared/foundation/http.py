"""One HTTP vocabulary for every route: the reply type, the JSON body parser and the error
formatter. Decisions in shared/ return a `Reply`; the handler turns it into an HttpResponse with
`respond`.

Cheap to import (json and azure.functions): every handler module may import it at module level.
pydantic loads inside `parse_body`, on the first request that needs it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import azure.functions as func

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound="BaseModel")
JSON = "application/json"
MAX_JSON_DEPTH = 64       # arrays and objects inside each other
MAX_INT_DIGITS = 100      # digits of a JSON integer; beyond, it is no count or time anyone sends
MAX_PROBLEMS = 50         # problems listed in one 400
MAX_NAME = 100            # characters of a field name quoted in a problem
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
    """One line per invalid field: 'where: what is wrong' (where 'body' for the whole body); at
    most MAX_PROBLEMS lines, each part of `where` cut to MAX_NAME characters (a field's name
    may be a key the sender chose)."""
    problems = []
    errors = error.errors()
    for item in errors[:MAX_PROBLEMS]:
        where = ".".join(str(part)[:MAX_NAME] for part in (prefix, *item["loc"]) if part != "")
        problems.append(f"{where or 'body'}: {item['msg']}")
    if len(errors) > MAX_PROBLEMS:
        problems.append(f"body: {len(errors) - MAX_PROBLEMS} more problem(s) not listed")
    return problems


def json_document(body: bytes | None, what: str = "request body") -> Any:
    """The body as JSON; BodyError saying what is wrong with it otherwise."""
    if not body or not body.strip():
        raise BodyError(f"{what} is empty; expected a JSON object", ["body: Field required"])
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"{what} is not valid UTF-8 (byte {exc.start})",
                        [f"body: not UTF-8 (byte {exc.start})"]) from None
    return json_text(text, what)


def json_text(text: str, what: str = "request body", where: str = "body") -> Any:
    """JSON text from the network as Python values, refusing what would break later: NaN and
    Infinity (Python's json takes them), numbers too long or too large for a float, nesting
    deeper than MAX_JSON_DEPTH, and lone surrogate escapes (`"\\ud800"` decodes into a str that
    cannot be encoded again). BodyError names the problem."""
    def refused(problem: str) -> BodyError:
        return BodyError(f"{what} is not acceptable JSON: {problem}", [f"{where}: {problem}"])

    too_deep = BodyError(f"{what} is nested too deeply (more than {MAX_JSON_DEPTH} levels)",
                         [f"{where}: nested deeper than {MAX_JSON_DEPTH} levels"])

    try:
        document = json.loads(text, parse_constant=_refuse_constant, parse_int=_bounded_int,
                              parse_float=_finite_float)
    except _Unacceptable as exc:
        raise refused(str(exc)) from None
    except json.JSONDecodeError as exc:
        position = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise BodyError(f"{what} is not valid JSON: {position}",
                        [f"{where}: not JSON ({position})"]) from None
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:  # e.g. the interpreter's own integer-string limit
        raise refused(str(exc)) from None
    if nested_deeper_than(text, MAX_JSON_DEPTH):
        raise too_deep
    if "\\u" in text and _has_lone_surrogate(document):
        raise refused("a \\u escape is a lone UTF-16 surrogate, which is no character")
    return document


class _Unacceptable(ValueError):
    """A JSON value the network must not give us (raised from json.loads' hooks)."""


def _refuse_constant(name: str) -> NoReturn:
    raise _Unacceptable(f"{name} is not a number (JSON has no NaN or Infinity)")


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise _Unacceptable(f"an integer of {len(digits.lstrip('-'))} digits is too long "
                            f"(at most {MAX_INT_DIGITS})")
    return int(digits)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unacceptable(f"the number {text[:40]} is out of range")
    return value


_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nested_deeper_than(text: str, limit: int) -> bool:
    """Whether arrays and objects in valid JSON `text` nest deeper than `limit` (brackets inside
    strings do not count); without recursion and at C speed: strings dropped, then the running
    sum of the brackets' steps."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > limit


def _has_lone_surrogate(document: Any) -> bool:
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


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

"""shared.foundation.http: body parsing that answers 400 (never crashes) and replies as sent."""

from __future__ import annotations

import json
from datetime import UTC
from typing import ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field

from shared.foundation.http import (
    HTML,
    BodyError,
    Reply,
    content_type_problem,
    error_reply,
    json_document,
    parse_body,
    respond,
    too_large,
    unavailable,
    validation_problems,
)


class Ask(BaseModel):
    EXPECTED: ClassVar[str] = '{"actor": "who", "count": <n>}'
    model_config = ConfigDict(extra="forbid", strict=True)

    actor: str = Field(min_length=1)
    count: int = 1


def refused(body: bytes | None, optional: bool = False) -> BodyError:
    with pytest.raises(BodyError) as caught:
        parse_body(Ask, body, optional=optional)
    assert caught.value.status == 400 and caught.value.reply().status == 400
    return caught.value


def refused_by(model: type[BaseModel], body: bytes) -> BodyError:
    with pytest.raises(BodyError) as caught:
        parse_body(model, body)
    return caught.value


def test_a_valid_body_is_the_model():
    assert parse_body(Ask, b'{"actor": "alice", "count": 3}') == Ask(actor="alice", count=3)


def test_an_empty_optional_body_is_the_defaults_and_a_required_one_is_refused():
    class Optional(BaseModel):
        now: float | None = None

    assert parse_body(Optional, b"", optional=True) == Optional()
    assert parse_body(Optional, None, optional=True) == Optional()
    assert parse_body(Optional, b"  \n", optional=True) == Optional()
    assert "empty" in refused(b"").message
    assert "empty" in refused(None).message


def test_an_optional_body_that_is_given_is_still_checked():
    assert "actor: Field required" in refused(b"{}", optional=True).problems


@pytest.mark.parametrize("body,said", [
    (b"{oops", "not valid JSON: Expecting property name enclosed in double quotes at line 1"),
    (b"\xff\xfe{}", "not valid UTF-8 (byte 0)"),
    (b"[1, 2]", "must be a JSON object, not list"),
    (b'"text"', "must be a JSON object, not str"),
    (b"null", "must be a JSON object, not NoneType"),
])
def test_bodies_that_are_not_json_objects_say_so(body, said):
    error = refused(body)
    assert said in error.message
    assert error.problems and error.problems[0].startswith("body: ")


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a": ' * 100_000,
                                  b"[" * 100_000 + b"]" * 100_000,
                                  b'{"data": ' + b"[" * 900 + b"]" * 900 + b"}",
                                  b"[" * 65 + b"]" * 65])
def test_deeply_nested_json_is_a_400_not_a_crash(body):
    error = refused(body)
    assert error.message == "request body is nested too deeply (more than 64 levels)"
    assert error.problems == ["body: nested deeper than 64 levels"]
    assert json.loads(respond(error.reply()).get_body())["error"] == error.message


def test_nesting_up_to_the_limit_is_validated_like_any_value():
    class Loose(BaseModel):
        data: list

    deep = b'{"data": ' + b"[" * 63 + b"]" * 63 + b"}"
    assert len(parse_body(Loose, deep).data) == 1
    assert "data: Input should be a valid list" in refused_by(Loose, b'{"data": {}}').problems
    brackets_in_strings = b'{"data": ["' + b"[{" * 500 + b'"]}'
    assert parse_body(Loose, brackets_in_strings).data == ["[{" * 500]


def test_a_wrong_field_is_named_in_the_message_and_the_problems():
    error = refused(b'{"actor": "", "count": "three", "force": true}')
    assert error.problems == ["actor: String should have at least 1 character",
                              "count: Input should be a valid integer",
                              "force: Extra inputs are not permitted"]
    for field_name in ("actor", "count", "force"):
        assert field_name in error.message
    assert Ask.EXPECTED in error.message
    assert error.reply().body == {"error": error.message, "problems": error.problems}


def test_validation_problems_prefix_nested_locations():
    class Inner(BaseModel):
        items: list[int]

    with pytest.raises(Exception) as caught:
        Inner.model_validate({"items": [1, "x"]})
    assert validation_problems(caught.value, "data") == [
        "data.items.1: Input should be a valid integer, unable to parse string as an integer"]
    with pytest.raises(Exception) as caught:
        Inner.model_validate([])
    assert validation_problems(caught.value) == ["body: Input should be a valid dictionary or "
                                                 "instance of Inner"]


def test_json_document_returns_any_json_value():
    assert json_document(b"[1, 2]") == [1, 2]
    assert json_document(" {\"é\": 1} ".encode()) == {"é": 1}


@pytest.mark.parametrize("value,problem", [
    (None, None), ("", None), ("application/json", None),
    ("Application/JSON; charset=utf-8", None), ("application/cloudevents+json", None),
    ("text/plain", "Content-Type 'text/plain' is not supported; send application/json"),
    ("application/x-www-form-urlencoded; charset=utf-8",
     "Content-Type 'application/x-www-form-urlencoded' is not supported; send application/json"),
])
def test_content_type_problem(value, problem):
    assert content_type_problem(value) == problem


def test_respond_sends_status_headers_and_json_body():
    response = respond(Reply(202, {"status": "accepted", "n": 2}, {"X-Thing": "1"}))
    assert response.status_code == 202
    assert response.mimetype == "application/json"
    assert response.headers["X-Thing"] == "1"
    assert json.loads(response.get_body()) == {"status": "accepted", "n": 2}


def test_respond_sends_a_list_and_values_json_cannot_encode_as_text():
    from datetime import datetime

    when = datetime(2026, 1, 2, tzinfo=UTC)
    assert json.loads(respond(Reply(200, [when])).get_body()) == [str(when)]


def test_respond_sends_html_as_is_and_no_body_as_empty():
    page = respond(Reply(410, "<p>gone &amp; done</p>", content_type=HTML))
    assert (page.status_code, page.mimetype, page.get_body()) == (
        410, "text/html", b"<p>gone &amp; done</p>")
    empty = respond(Reply(200))
    assert (empty.status_code, empty.get_body()) == (200, b"")


def test_error_replies():
    assert error_reply(409, "taken").body == {"error": "taken"}
    assert error_reply(400, "bad", ["x: wrong"]).body == {"error": "bad", "problems": ["x: wrong"]}
    assert not error_reply(400, "bad").ok and Reply(202, {}).ok
    busy = unavailable("busy", 0.2)
    assert (busy.status, busy.headers["Retry-After"]) == (503, "1")
    assert unavailable("later", 4.5).headers["Retry-After"] == "5"
    big = too_large(5000, 4096)
    assert big.status == 413 and "5000 bytes" in big.body["error"] and "4096" in big.body["error"]
    response = respond(busy)
    assert response.headers["Retry-After"] == "1" and json.loads(response.get_body()) == {
        "error": "busy"}

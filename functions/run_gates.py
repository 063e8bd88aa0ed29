"""Consumes `run-gates`: runs the gate suite on a model version and decides whether it may become
@challenger (shared/gates/service.py says what a run does).

What starts a run (shared/gates/request.py):
- `model_version.created` (the router forwards it here): once per model/version, however often
  the event is delivered (idempotency scope "run-gates", key "<model>/<version>").
- a `model_version_tag.set` event whose tags carry `gatehouse.rerun=<value>`: once per value
  (key "<model>/<version>/rerun/<value>"), from the route below or from the registry.
  Any other tag event is ignored.

POST /api/gates/{model}/{version}/run asks for a re-run. Optional JSON body:
{"rerun_id": "...", "requested_by": "...", "reason": "..."}. 202 with the event id; 400 for a bad
route or body (naming the field); 404 for a version the registry does not have; 503 when the
registry or the queue cannot be reached.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.foundation.queues import RUN_GATES

bp = func.Blueprint()
log = logging.getLogger("gatehouse.run_gates")

SCOPE = "run-gates"
MAX_MODEL_NAME = 500        # characters (Unity Catalog's three names of 255 fit)
MAX_VERSION = 2**63 - 1     # registries keep versions as 64-bit integers
BAD_ROUTE = ("the route is /api/gates/<model>/<version>/run with a model name of at most "
             f"{MAX_MODEL_NAME} characters and a version number from 1")


def _is_version(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 19 and 1 <= int(text) <= MAX_VERSION


def handle(body: bytes, queue: str = RUN_GATES) -> dict | None:
    from shared.events import Envelope
    from shared.foundation import runtime
    from shared.foundation.handling import consume, process_once
    from shared.foundation.logs import log_context
    from shared.gates.request import gate_request
    from shared.gates.service import from_runtime

    def run(content: bytes) -> dict | None:
        envelope = Envelope.from_json(content)
        request = gate_request(envelope.data)
        if request is None:
            log.info("run-gates: %s (%s) asks for no gate run; ignored", envelope.id,
                     envelope.type)
            return None
        with log_context(envelope):
            result = process_once(runtime.idempotency(), SCOPE, request.key,
                                  lambda: from_runtime().run(envelope, request))
            log.info("run-gates %s: %s", request.key, result)
        return result

    return consume(queue, SCOPE, body, run)


@bp.queue_trigger(arg_name="msg", queue_name=RUN_GATES, connection="AzureWebJobsStorage")
def run_gates(msg: func.QueueMessage) -> None:
    handle(msg.get_body(), RUN_GATES)


@bp.route(route="gates/{model}/{version}/run", methods=["POST"])
def request_rerun(req: func.HttpRequest) -> func.HttpResponse:
    """Ask for the gate suite to run again on one version (see the module docstring)."""
    from shared.foundation.http import BodyError, error_reply, parse_body, respond
    from shared.gates.request import RerunBody
    from shared.gates.service import from_runtime

    model = (req.route_params.get("model") or "").strip()
    version = (req.route_params.get("version") or "").strip()
    if not model or len(model) > MAX_MODEL_NAME or not _is_version(version):
        return respond(error_reply(400, BAD_ROUTE))
    try:
        body = parse_body(RerunBody, req.get_body() or b"", optional=True)
    except BodyError as exc:
        return respond(exc.reply())
    return respond(from_runtime().request_rerun(model, version, body))

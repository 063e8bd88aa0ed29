"""A small FunctionApp that tests/test_local_host.py runs on shared.dev.local_host."""

import json
import os
import time

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
CONNECTION = "AzureWebJobsStorage"


@app.route(route="health", methods=["GET"])
def health(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"status": "ok",
                                         "greeting": os.environ.get("LOCAL_HOST_GREETING")}),
                             mimetype="application/json")


@app.route(route="items/{id:int}", methods=["GET", "POST"])
def item(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps({"id": req.route_params["id"], "params": dict(req.params),
                    "method": req.method, "body": req.get_body().decode(),
                    "url": req.url, "header": req.headers.get("x-test")}),
        status_code=201 if req.method == "POST" else 200, mimetype="application/json",
        headers={"X-Item": req.route_params["id"]})


@app.route(route="greet/{name?}")
def greet(req: func.HttpRequest) -> str:
    return f"hello {req.route_params.get('name', 'world')}"


@app.route(route="boom", methods=["GET"])
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom on purpose")


@app.route(route="slow", methods=["GET"])
def slow(req: func.HttpRequest) -> func.HttpResponse:
    time.sleep(float(req.params.get("seconds", "0.5")))
    return func.HttpResponse("done")


@app.route(route="send", methods=["POST"])
@app.queue_output(arg_name="out", queue_name="lh-work", connection=CONNECTION)
def send(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    out.set(req.get_body().decode())
    return func.HttpResponse(status_code=202)


@app.queue_trigger(arg_name="msg", queue_name="lh-work", connection=CONNECTION)
@app.queue_output(arg_name="$return", queue_name="lh-done", connection=CONNECTION)
def work(msg: func.QueueMessage) -> str:
    return json.dumps({"body": msg.get_body().decode(), "id": msg.id,
                       "dequeue_count": msg.dequeue_count,
                       "has_insertion_time": msg.insertion_time is not None})


@app.queue_trigger(arg_name="msg", queue_name="lh-fanout", connection=CONNECTION)
@app.queue_output(arg_name="out", queue_name="lh-fanout-out", connection=CONNECTION)
def fanout(msg: func.QueueMessage, out: func.Out[list]) -> None:
    body = msg.get_body().decode()
    out.set([f"{body}-1", f"{body}-2".encode()])


@app.queue_trigger(arg_name="msg", queue_name="lh-fail", connection=CONNECTION)
def fail(msg: func.QueueMessage) -> None:
    raise RuntimeError(f"cannot handle {msg.get_body().decode()}")


@app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", run_on_startup=True)
@app.queue_output(arg_name="$return", queue_name="lh-timer", connection=CONNECTION)
def startup_timer(timer: func.TimerRequest, context) -> str:
    return json.dumps({"past_due": timer.past_due, "function": context.function_name})

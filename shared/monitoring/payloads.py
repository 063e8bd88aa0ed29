"""Payload-log records read as what the monitor needs: per request its latency, status and token
count; per scored row its inputs and the model's answer.

Requests follow MLflow's scoring protocol (`dataframe_split`, `dataframe_records`, `instances`,
`inputs`); responses are `{"predictions": [...]}` whose items are a positive-class probability
(float in [0, 1]), class probabilities ([p0, p1]), a class (int / bool / str), a record with a
`probability`/`score` field, or (LLM endpoints) an OpenAI-style body with `usage`. A body that
cannot be read still counts for latency and errors; its rows are skipped and counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.monitoring.labels import row_key

if TYPE_CHECKING:
    from shared.serving.payload_log import PayloadRecord

SCORE_FIELDS = ("probability", "score", "proba", "positive_probability", "p1", "1")
CLASS_FIELDS = ("prediction", "predicted_label", "label", "class")


@dataclass(frozen=True)
class RequestFacts:
    ts: float
    version: str | None
    latency_ms: float
    ok: bool
    output_tokens: int | None = None


@dataclass(frozen=True)
class ScoredRow:
    key: str                      # label key: the request id, or `<request id>/<index>`
    ts: float
    version: str | None
    features: dict[str, Any]
    score: float | None = None    # P(positive class)
    predicted: object = None      # the predicted class when the model gave no score


@dataclass
class WindowData:
    requests: list[RequestFacts] = field(default_factory=list)
    rows: list[ScoredRow] = field(default_factory=list)
    unreadable: int = 0           # successful requests whose rows could not be read


def input_rows(body: object) -> list[dict[str, Any]]:
    """The input rows of one scoring request body, as {column: value} dicts."""
    if not isinstance(body, dict):
        raise ValueError("request body is not a JSON object")
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        columns = split.get("columns")
        data = split.get("data") or []
        if columns is None:
            columns = [str(i) for i in range(len(data[0]))] if data else []
        # a row shorter or longer than `columns` keeps the pairs it has
        return [dict(zip(columns, row, strict=False)) for row in data]
    if "dataframe_records" in body:
        return [dict(row) for row in body["dataframe_records"]]
    for key in ("instances", "inputs"):
        if key in body:
            value = body[key]
            if isinstance(value, dict):  # columnar: {column: [values]}
                columns = list(value)
                length = len(value[columns[0]]) if columns else 0
                return [{c: value[c][i] for c in columns} for i in range(length)]
            if isinstance(value, list):
                return [row if isinstance(row, dict) else {str(i): v for i, v in enumerate(row)}
                        if isinstance(row, list) else {"0": row} for row in value]
    raise ValueError("unknown request format (expected dataframe_split, dataframe_records, "
                     "instances or inputs)")


def _answer(prediction: object) -> tuple[float | None, object]:
    """(score, predicted class) from one prediction item."""
    if isinstance(prediction, bool):
        return None, int(prediction)
    if isinstance(prediction, int):
        return None, prediction
    if isinstance(prediction, float):
        return (prediction, None) if 0.0 <= prediction <= 1.0 else (None, prediction)
    if isinstance(prediction, list) and len(prediction) == 2 and all(
            isinstance(p, (int, float)) and not isinstance(p, bool) for p in prediction):
        return float(prediction[1]), None
    if isinstance(prediction, list) and prediction:
        return None, max(range(len(prediction)), key=lambda i: prediction[i])
    if isinstance(prediction, dict):
        for name in SCORE_FIELDS:
            value = prediction.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and 0 <= value <= 1:
                return float(value), None
        for name in CLASS_FIELDS:
            if name in prediction:
                return None, prediction[name]
    if isinstance(prediction, str):
        return None, prediction
    return None, None


def output_tokens(body: object) -> int | None:
    if isinstance(body, dict) and isinstance(body.get("usage"), dict):
        tokens = body["usage"].get("completion_tokens") or body["usage"].get("output_tokens")
        if isinstance(tokens, int) and tokens > 0:
            return tokens
    return None


def read_records(records: Iterable[PayloadRecord]) -> WindowData:
    """Records with .ts .request_id .version .inputs .outputs .latency_ms .status (PayloadRecord,
    or rows of an inference table shaped the same)."""
    data = WindowData()
    for record in records:
        ok = 200 <= int(record.status) < 300
        outputs = None
        if ok and record.outputs:
            try:
                outputs = json.loads(record.outputs)
            except ValueError:
                outputs = None
        data.requests.append(RequestFacts(record.ts, record.version, float(record.latency_ms),
                                          ok, output_tokens(outputs)))
        if not ok:
            continue
        try:
            rows = input_rows(json.loads(record.inputs))
            predictions = outputs.get("predictions") if isinstance(outputs, dict) else None
            if not isinstance(predictions, list) or len(predictions) != len(rows):
                raise ValueError("predictions do not match the input rows")
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            if outputs is None or output_tokens(outputs) is None:
                data.unreadable += 1
            continue
        for index, (features, prediction) in enumerate(zip(rows, predictions, strict=True)):
            score, predicted = _answer(prediction)
            data.rows.append(ScoredRow(row_key(record.request_id, index, len(rows)), record.ts,
                                       record.version, features, score, predicted))
    return data

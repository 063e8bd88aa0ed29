"""The status page (`GET /api/status`): one HTML page, no build step, no script.

Rollouts with their traffic history (an inline SVG of the challenger's share, and each change
with the judge's figures and tests), gate reports per version with the reliability diagram,
alerts and pages, poison messages with their reasons. The data is `shared.ops.status.gather`'s.
"""

from __future__ import annotations

import re
import tempfile
import time
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from shared.foundation.http import HTML, Reply, error_reply
from shared.ops import render

DIAGRAMS = ("reliability.png",)
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d2430;background:#f7f8fa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
section.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;
margin:10px 0}table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff3;vertical-align:top}
th{font-weight:600;color:#4a5465;font-size:12px;text-transform:uppercase}
.passed,.promoted{color:#17803d;font-weight:600}.failed,.rolled_back,.aborted{color:#b42318;
font-weight:600}.inconclusive,.shadow,.canary,.pending,.queued,.ramping{color:#b54708;font-weight:600}
.empty{color:#667085;font-style:italic}.muted{color:#667085;font-size:12px}
img.diagram{max-width:520px;border:1px solid #eceff3;margin-top:6px}
code{font-size:12px;background:#f1f3f6;padding:1px 4px;border-radius:3px}
"""


def _e(value: Any) -> str:
    return escape("-" if value is None or value == "" else str(value))


def _when(value: Any, now: float) -> str:
    moment = render.timestamp(value)
    title = "" if moment is None else f' title="{_e(value)}"'
    return f"<span{title}>{_e(render.ago(value, now))}</span>"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _empty(text: str) -> str:
    return f'<p class="empty">{_e(text)}</p>'


def _figures(transition: dict) -> str:
    figures = ", ".join(f"{_e(k)} {v:.4g}" if isinstance(v, int | float) else f"{_e(k)} {_e(v)}"
                        for k, v in sorted((transition.get("figures") or {}).items()))
    tests = "; ".join(
        f"{_e(t.get('name'))}: p={t.get('p_value', float('nan')):.3g} "
        f"(α {t.get('alpha', float('nan')):.3g}{', significant' if t.get('significant') else ''})"
        for t in transition.get("tests") or [])
    return " — ".join(part for part in (figures, tests) if part) or "-"


def traffic_svg(history: list[dict], width: int = 520, height: int = 90) -> str:
    """The challenger's share of traffic after each change, as a step line."""
    shares = []
    for t in history:
        routes = t.get("routes") or {}
        shares.append(routes.get(str(t.get("version")), 0))
    if not shares:
        return ""
    step = width / max(len(shares), 1)
    points, x = [], 0.0
    for share in shares:
        y = height - share / 100 * (height - 10) - 5
        points += [f"{x:.1f},{y:.1f}", f"{x + step:.1f},{y:.1f}"]
        x += step
    labels = "".join(
        f'<text x="{i * step + 3:.1f}" y="{height - 8}" font-size="10" fill="#667085">'
        f'{_e(t.get("action"))}</text>' for i, t in enumerate(history))
    return (f'<svg role="img" aria-label="challenger traffic share per change" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}"><rect width="100%" height="100%" '
            f'fill="#fbfcfd"/><polyline fill="none" stroke="#2563eb" stroke-width="2" '
            f'points="{" ".join(points)}"/>{labels}<text x="{width - 4}" y="12" font-size="10" '
            f'text-anchor="end" fill="#667085">challenger %, 0–100</text></svg>')


def _mirrored(rollout: dict) -> str:
    """The shadow step: live requests mirrored to the challenger, its answers returned to no
    one (the traffic shown is all the champion's)."""
    if not rollout.get("mirroring"):
        return ""
    return (f'; live requests mirrored to v{_e(rollout.get("challenger"))} '
            f'(<span class="shadow">@shadow</span>, its answers go to no caller)')


def rollouts_html(rollouts: list[dict], now: float) -> str:
    if not rollouts:
        return _empty(render.rollouts_table([], now))
    cards = []
    for r in rollouts:
        current = r.get("active") or r.get("last") or {}
        phase = current.get("phase", "-")
        rows = [[_when(t["at"], now), f"v{_e(t['version'])}", _e(t["action"]),
                 _e(render.routes_text(t.get("routes"))), _e(t.get("actor")), _e(t.get("reason")),
                 _figures(t)] for t in r.get("history") or []]
        cards.append(
            f'<section class="card rollout" data-endpoint="{_e(r["endpoint"])}">'
            f'<h3>{_e(r["endpoint"])} <span class="muted">model {_e(r["model_name"])}, '
            f'champion v{_e(r.get("champion"))}</span></h3>'
            f'<p>rollout of v{_e(current.get("challenger"))}: '
            f'<span class="{_e(phase)}">{_e(phase)}</span>, traffic '
            f'{_e(render.routes_text(current.get("routes")))}{_mirrored(current)}, updated '
            f'{_when(current.get("updated_at"), now)}</p>'
            f'{traffic_svg(r.get("history") or [])}'
            + _table(["when", "version", "action", "traffic", "by", "why",
                      "judge's figures and tests"], rows) + "</section>")
    return "".join(cards)


def diagram_url(run_id: str, name: str, code: str | None) -> str:
    query = f"?code={quote(code)}" if code else ""
    return f"status/reports/{quote(run_id)}/{quote(name)}{query}"


def verdicts_html(verdicts: list[dict], now: float, code: str | None) -> str:
    if not verdicts:
        return _empty(render.verdicts_table([], now))
    cards = []
    for v in verdicts:
        run = v.get("report_run_id")
        source = diagram_url(run, DIAGRAMS[0], code) if run else ""
        image = (f'<img class="diagram" loading="lazy" alt="reliability diagram of '
                 f'{_e(v["model"])} v{_e(v["version"])}" src="{_e(source)}">' if run else "")
        link = (f' <a href="{_e(v["report_url"])}">report run in MLflow</a>'
                if v.get("report_url") else "")
        cards.append(
            f'<section class="card verdict" data-model="{_e(v["model"])}" '
            f'data-version="{_e(v["version"])}"><h3>{_e(v["model"])} v{_e(v["version"])}: '
            f'<span class="{_e(v["verdict"])}">{_e(v["verdict"])}</span></h3>'
            f'<p class="muted">decided {_when(v.get("decided_at"), now)}; aliases '
            f'{_e(v.get("aliases"))}; blocking gates not passed: {_e(v.get("blocking"))}{link}'
            f'</p><p>{_e(v.get("reason"))}</p>{image}</section>')
    return "".join(cards)


def alerts_html(alerts: list[dict], now: float) -> str:
    if not alerts:
        return _empty(render.alerts_table([], now))
    rows = [[_e(a.get("severity")), _e(a.get("title")), _e(a.get("page")), _e(a.get("text")),
             _when(a.get("delivered_at"), now)] for a in alerts]
    return _table(["severity", "alert", "page", "what", "when"], rows)


def poison_html(entries: list[dict], now: float) -> str:
    if not entries:
        return _empty(render.poison_table([], now))
    rows = [[_e(e["queue"]), _e(e.get("handler")), _e(e.get("attempts")),
             _when(e.get("last_failed_at") or e.get("inserted"), now),
             f"<code>{_e(e.get('last_error'))}</code>"] for e in entries]
    return _table(["queue", "handler", "attempts", "last failed", "why"], rows)


def page(status: dict, now: float, code: str | None = None) -> str:
    problems = status.get("problems") or {}
    sections = [("Rollouts", "rollouts", lambda: rollouts_html(status["rollouts"], now)),
                ("Gate reports", "verdicts", lambda: verdicts_html(status["verdicts"], now, code)),
                ("Alerts and pages", "alerts", lambda: alerts_html(status["alerts"], now)),
                ("Poison messages", "poison", lambda: poison_html(status["poison"], now))]
    body = "".join(
        f'<h2 id="{key}">{title}</h2>'
        + (_empty(f"unknown: {problems[key]}") if key in problems else build())
        for title, key, build in sections)
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>Gatehouse status</title><style>{STYLE}</style></head><body>"
            "<h1>Gatehouse status</h1><p class=\"muted\">Rollouts, gate verdicts, alerts and "
            f"poison messages as of this page load.</p>{body}</body></html>")


RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def page_reply(code: str | None) -> Reply:
    """The page from the app's own settings: its storage, MLflow server and outbox."""
    from shared.foundation import runtime
    from shared.ops.status import gather

    app = runtime.settings()
    storage = None
    if app.storage_connection or app.storage_account_name:
        storage = runtime.storage_connection()
    status = gather(storage, app.mlflow_tracking_uri, app.outbox_path)
    return Reply(200, page(status, time.time(), code), content_type=HTML)


def diagram_reply(run_id: str, name: str) -> Reply:
    """A report run's diagram (PNG), read from MLflow."""
    from shared.foundation import runtime

    if name not in DIAGRAMS:
        return error_reply(400, f"no such diagram {name!r}", [f"artifact: one of {DIAGRAMS}"])
    if not RUN_ID.match(run_id):
        return error_reply(400, "not an MLflow run id", ["run_id: 32 hexadecimal digits"])
    tracking_uri = runtime.settings().mlflow_tracking_uri
    if not tracking_uri:
        return error_reply(404, "no MLflow server configured (MLFLOW_TRACKING_URI)")
    import mlflow

    with tempfile.TemporaryDirectory(prefix="gatehouse-diagram-") as folder:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=name, dst_path=folder, tracking_uri=tracking_uri)
        except Exception as exc:  # MLflow says "not found" in several exception types
            return error_reply(404, f"run {run_id} has no {name}: {exc.__class__.__name__}")
        data = Path(path).read_bytes()
    return Reply(200, data, {"Cache-Control": "max-age=3600"}, content_type="image/png")

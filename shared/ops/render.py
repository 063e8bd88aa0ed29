"""Tables and relative times for people (pure): what the CLI prints without --json."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime


def timestamp(value) -> float | None:
    """Epoch seconds from an epoch number or an ISO 8601 text; None when there is none."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def ago(value, now: float) -> str:
    """'just now', '42 s ago', '5 min ago', '3 h ago', '2 d ago' ('in ...' for the future)."""
    moment = timestamp(value)
    if moment is None:
        return "-"
    seconds = now - moment
    span = abs(seconds)
    if span < 2:
        return "just now"
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min"), (1, "s")):
        if span >= size:
            amount = f"{span / size:.0f} {unit}"
            return f"{amount} ago" if seconds >= 0 else f"in {amount}"
    return "just now"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], max_width: int = 60) -> str:
    """A plain text table; cells longer than `max_width` are cut with an ellipsis."""
    def cell(value: object) -> str:
        text = "-" if value is None or value == "" else str(value).replace("\n", " ")
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]
    return "\n".join(lines)


def routes_text(routes: dict[str, int] | None) -> str:
    return ", ".join(f"v{v} {p}%" for v, p in sorted((routes or {}).items(),
                                                     key=lambda kv: -kv[1])) or "-"


def rollouts_table(rollouts: list[dict], now: float) -> str:
    if not rollouts:
        return ("no rollouts yet: a rollout starts when a version passes its gates (the first "
                "version to pass is deployed at 100% as champion)")
    rows = []
    for r in rollouts:
        current = r.get("active") or r.get("last") or {}
        rows.append([r["endpoint"], r["model_name"], f"v{r['champion']}" if r.get("champion")
                     else "-", f"v{current.get('challenger')}" if current else "-",
                     current.get("phase", "-"), routes_text(current.get("routes")),
                     ago(current.get("updated_at"), now), current.get("reason")])
    return table(["endpoint", "model", "champion", "rollout of", "phase", "traffic",
                  "updated", "why"], rows)


def history_table(history: list[dict], now: float) -> str:
    if not history:
        return "no traffic changes recorded"
    rows = [[ago(t["at"], now), f"v{t['version']}", t["action"], routes_text(t["routes"]),
             t["actor"], t["reason"]] for t in history]
    return table(["when", "version", "action", "traffic", "by", "why"], rows, max_width=90)


def verdicts_table(verdicts: list[dict], now: float) -> str:
    if not verdicts:
        return ("no gate verdicts yet: register a model version on the MLflow server and the "
                "webhook starts the gate suite")
    rows = [[v["model"], f"v{v['version']}", v["verdict"], v.get("blocking") or "-",
             v.get("aliases") or "-", ago(v.get("decided_at"), now)] for v in verdicts]
    return table(["model", "version", "verdict", "blocking gates not passed", "aliases",
                  "decided"], rows)


def alerts_table(alerts: list[dict], now: float) -> str:
    if not alerts:
        return "no alerts: nothing fired from the monitor or the alert routes"
    rows = [[a.get("severity"), a.get("title"), a.get("page") or "-",
             ago(a.get("delivered_at"), now)] for a in alerts]
    return table(["severity", "alert", "page", "when"], rows, max_width=80)


def poison_table(entries: list[dict], now: float) -> str:
    if not entries:
        return ("no poison messages: every message was handled (a message that fails "
                "every retry would be listed here with its last error)")
    rows = [[e["queue"], e.get("handler"), e.get("attempts"),
             ago(e.get("last_failed_at") or e.get("inserted"), now), e.get("last_error")]
            for e in entries]
    return table(["queue", "handler", "attempts", "last failed", "last error"], rows,
                 max_width=80)


def status_text(status: dict, now: float) -> str:
    sections = [("Rollouts", "rollouts", rollouts_table),
                ("Recent gate verdicts", "verdicts", verdicts_table),
                ("Alerts and pages", "alerts", alerts_table),
                ("Poison messages", "poison", poison_table)]
    problems = status.get("problems") or {}
    return "\n\n".join(
        f"{title}\n" + (f"unknown ({problems[key]})" if key in problems
                        else render(status[key], now))
        for title, key, render in sections)

"""Exactly-once, seen from the targets: what the host wrote to MLflow, serving, Slack and PagerDuty,
and what is left on the queues. Each function returns the problems it found (empty: fine)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tests.crash.stack import RecordingProxy, queue_depths


def doubled(counter: Counter, what: str) -> list[str]:
    return [f"{what} {key} happened {count} times" for key, count in counter.items() if count > 1]


def repeated(writes: list[tuple[str, str]], what: str) -> list[str]:
    """Writes of (target, value) in order: a target set to the value it already had is a redone
    write (the same value again after a change in between is a legitimate new write)."""
    last: dict[str, str] = {}
    found = []
    for target, value in writes:
        if last.get(target) == value:
            found.append(f"{what} {target} = {value!r} written again without a change between")
        last[target] = value
    return found


def mlflow_writes(proxy: RecordingProxy, model: str) -> list[str]:
    tags = [(f"v{w.body.get('version')} {w.body.get('key')}", w.body.get("value"))
            for w in proxy.matching("/model-versions/set-tag", name=model)]
    aliases = [(f"@{w.body.get('alias')}",
                w.body.get("version") if w.method == "POST" else "(deleted)")
               for w in proxy.matching("/registered-models/alias", name=model)]
    return repeated(tags, "version tag") + repeated(aliases, "alias")


def report_runs(client, model: str, experiment: str) -> Counter:
    """Report runs per version (deleted ones do not count)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return Counter()
    runs = client.search_runs([found.experiment_id],
                              filter_string=f"tags.`gatehouse.model` = '{model}'")
    return Counter(run.data.tags.get("gatehouse.version") for run in runs)


def serving_writes(proxy: RecordingProxy, endpoint: str) -> list[str]:
    """The same routes set twice in a row is a redone deployment step."""
    configs = [w.body.get("routes")
               for w in proxy.matching(f"/gatehouse/endpoints/{endpoint}/config")]
    return [f"serving config {a} applied twice in a row"
            for a, b in zip(configs, configs[1:], strict=False) if a == b]


def slack_posts(peer, marker: str) -> list[str]:
    with peer.lock:
        posts = Counter((m["text"], m["thread_ts"]) for m in peer.messages.values()
                        if marker in m["text"])
    return doubled(posts, "Slack message")


def pagerduty_incidents(peer, marker: str) -> list[str]:
    opened = Counter(i["dedup_key"] for i in peer.incidents if marker in i["summary"])
    return doubled(opened, "PagerDuty incident")


def teams_cards(peer, marker: str) -> list[str]:
    return doubled(Counter(json.dumps(card, sort_keys=True) for card in peer.cards_about(marker)),
                   "Teams card")


def outbox_lines(path: Path, marker: str) -> list[str]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if marker in line]
    return doubled(Counter(line["event_id"] for line in lines), "outbox notification")


def retraining_runs(runs_dir: Path, marker: str) -> list[str]:
    started = [p for p in runs_dir.glob("*.json") if marker in p.read_text()]
    return [f"{len(started)} retraining runs started"] if len(started) > 1 else []


def stranded(storage: str, expected_poison: str | None = None) -> list[str]:
    return [f"{count} message(s) left on {queue}"
            for queue, count in queue_depths(storage).items()
            if count and queue != f"{expected_poison}-poison"]

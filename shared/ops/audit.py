"""MLOps maturity audit of an MLflow registry: how much of the promotion path is under control.

Per registered model and overall:
- tagging coverage: share of runs, and of versions, that carry every lineage tag
  (versions also need a run id);
- run volume: runs behind the model's versions, and runs in the experiments they came from;
- registration frequency: versions per 30 days over the model's registered history (its count
  when that history is shorter than 30 days);
- promotion lead time: version created -> became champion (`gatehouse.champion_since`, which
  Gatehouse writes when it promotes or bootstraps a champion), median;
- share of champion versions promoted with a gate report (`gatehouse.gates.report_run_id`);
- versions serving without a gate report (currently @champion / @challenger or in
  Production / Staging, with no report).

`collect` reads the registry; `summarise` is pure; `to_markdown` / `to_json` / `write_chart`
render the result.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field

from shared.registry import tags

DAY_MS = 86_400_000
SERVING_ALIASES = ("champion", "challenger")
SERVING_STAGES = ("Production", "Staging")


@dataclass(frozen=True)
class VersionFacts:
    version: str
    created_ms: int
    run_id: str | None
    version_tags: dict[str, str]
    run_tags: dict[str, str]
    aliases: tuple[str, ...] = ()
    stage: str | None = None


@dataclass(frozen=True)
class ModelFacts:
    name: str
    versions: list[VersionFacts]
    experiment_runs: int = 0


@dataclass
class ModelAudit:
    model: str
    versions: int
    runs: int
    experiment_runs: int
    run_tag_coverage: float | None
    version_tag_coverage: float | None
    versions_per_30_days: float | None
    median_lead_time_days: float | None
    champions: int
    champions_with_gate_report: float | None
    serving_without_report: list[str] = field(default_factory=list)


def _share(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def has_lineage(tag_map: dict[str, str], required: tuple[str, ...]) -> bool:
    return all(tag_map.get(name) for name in required)


def audit_model(facts: ModelFacts, required: tuple[str, ...] = tags.DEFAULT_LINEAGE_TAGS
                ) -> ModelAudit:
    versions = facts.versions
    runs = {v.run_id: v.run_tags for v in versions if v.run_id}
    tagged_versions = sum(1 for v in versions
                          if v.run_id and has_lineage({**v.run_tags, **v.version_tags}, required))
    created = sorted(v.created_ms for v in versions)
    span_days = (created[-1] - created[0]) / DAY_MS if len(created) > 1 else 0.0
    # Over a history shorter than 30 days the count itself is the rate: 4 versions registered
    # in 8 minutes are 4 in those 30 days, not 4 per minute scaled up to 120.
    frequency = round(len(created) / max(span_days, 30.0) * 30, 3) if created else None
    champions = [v for v in versions if tags.CHAMPION_SINCE in v.version_tags]
    lead_days = [(int(v.version_tags[tags.CHAMPION_SINCE]) - v.created_ms) / DAY_MS
                 for v in champions]
    with_report = [v for v in champions if v.version_tags.get(tags.GATE_REPORT_RUN)]
    serving = [v for v in versions
               if set(v.aliases) & set(SERVING_ALIASES) or v.stage in SERVING_STAGES]
    return ModelAudit(
        model=facts.name, versions=len(versions), runs=len(runs),
        experiment_runs=facts.experiment_runs,
        run_tag_coverage=_share(sum(has_lineage(t, required) for t in runs.values()), len(runs)),
        version_tag_coverage=_share(tagged_versions, len(versions)),
        versions_per_30_days=frequency,
        median_lead_time_days=round(statistics.median(lead_days), 3) if lead_days else None,
        champions=len(champions),
        champions_with_gate_report=_share(len(with_report), len(champions)),
        serving_without_report=[v.version for v in serving
                                if not v.version_tags.get(tags.GATE_REPORT_RUN)],
    )


def summarise(models: list[ModelFacts], required: tuple[str, ...] = tags.DEFAULT_LINEAGE_TAGS
              ) -> dict:
    """The audit of every model and the overall figures (pure)."""
    audits = [audit_model(m, required) for m in models]
    everything = ModelFacts("(all models)", [v for m in models for v in m.versions],
                            sum(m.experiment_runs for m in models))
    overall = audit_model(everything, required)
    overall.serving_without_report = [f"{a.model}/v{v}" for a in audits
                                      for v in a.serving_without_report]
    return {"required_lineage_tags": list(required), "overall": asdict(overall),
            "models": [asdict(a) for a in audits]}


def collect(client, models: list[str] | None = None) -> list[ModelFacts]:
    """Read what the audit needs from an MLflow registry (MlflowClient)."""
    names = models or [m.name for m in client.search_registered_models(max_results=1000)]
    facts = []
    for name in names:
        versions, experiments = [], set()
        # Version searches do not return aliases; the registered model holds them.
        alias_map = client.get_registered_model(name).aliases or {}
        aliases_of: dict[str, list[str]] = {}
        for alias, target in alias_map.items():
            aliases_of.setdefault(str(target), []).append(alias)
        for mv in client.search_model_versions(f"name='{name}'"):
            run_tags: dict[str, str] = {}
            if mv.run_id:
                run = client.get_run(mv.run_id)
                run_tags = dict(run.data.tags)
                experiments.add(run.info.experiment_id)
            versions.append(VersionFacts(
                version=str(mv.version), created_ms=int(mv.creation_timestamp),
                run_id=mv.run_id or None, version_tags=dict(mv.tags or {}), run_tags=run_tags,
                aliases=tuple(sorted(aliases_of.get(str(mv.version), []))),
                stage=getattr(mv, "current_stage", None)))
        experiment_runs = sum(len(client.search_runs([e], max_results=10_000)) for e in experiments)
        facts.append(ModelFacts(name, sorted(versions, key=lambda v: int(v.version)),
                                experiment_runs))
    return facts


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and value <= 1 and not isinstance(value, bool):
        return f"{value:.0%}"
    if isinstance(value, list):
        return ", ".join(value) or "none"
    return str(value)


COLUMNS = [("model", "model"), ("versions", "versions"), ("runs", "runs"),
           ("experiment_runs", "runs in experiments"), ("run_tag_coverage", "runs tagged"),
           ("version_tag_coverage", "versions with lineage"),
           ("versions_per_30_days", "versions / 30 d"),
           ("median_lead_time_days", "lead time to champion (d, median)"),
           ("champions_with_gate_report", "champions with gate report"),
           ("serving_without_report", "serving without report")]


def to_markdown(summary: dict) -> str:
    lines = ["# MLOps maturity audit", "",
             "Lineage tags required: "
             + ", ".join(f"`{t}`" for t in summary["required_lineage_tags"]),
             "", "| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for row in summary["models"] + [summary["overall"]]:
        cells = []
        for key, _ in COLUMNS:
            value = row[key]
            if key == "versions_per_30_days" and value is not None:
                cells.append(f"{value:.2f}")
            elif key == "median_lead_time_days" and value is not None:
                cells.append(f"{value:.1f}")
            else:
                cells.append(_cell(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_json(summary: dict) -> str:
    return json.dumps(summary, indent=2)


def write_chart(summary: dict, path: str) -> None:
    """A small bar chart: lineage coverage and gate-report share per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = summary["models"]
    names = [m["model"] for m in models]
    coverage = [(m["version_tag_coverage"] or 0) * 100 for m in models]
    reported = [(m["champions_with_gate_report"] or 0) * 100 for m in models]
    positions = range(len(names))
    figure, axis = plt.subplots(figsize=(max(4, 1.2 * len(names) + 2), 3.2))
    axis.bar([p - 0.2 for p in positions], coverage, width=0.4, label="versions with lineage")
    axis.bar([p + 0.2 for p in positions], reported, width=0.4, label="champions with gate report")
    axis.set_xticks(list(positions), names, rotation=20, ha="right")
    axis.set_ylim(0, 100)
    axis.set_ylabel("%")
    axis.set_title("MLOps maturity")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

"""The gate report as people read it: report.json, report.md and the reliability diagram PNG."""

from __future__ import annotations

import io
import json
from typing import Any

from shared.gates.calibration import ReliabilityTable
from shared.gates.results import jsonable
from shared.gates.suite import SuiteReport

_STATUS_MARK = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "inconclusive": "INCONCLUSIVE",
                "skipped": "skipped"}


def report_document(report: SuiteReport, policy: Any, context: dict[str, Any]) -> dict[str, Any]:
    document = {
        "model": report.model_name, "version": report.version,
        "champion_version": report.champion_version, "verdict": report.verdict,
        "blocking": [r.name for r in report.blocking],
        **context,
        "headline": report.headline,
        "gates": [r.to_dict() for r in report.results],
        "reliability": {
            "kind": report.calibration.kind if report.calibration else None,
            "candidate": report.candidate_table.rows() if report.candidate_table else None,
            "champion": report.champion_table.rows() if report.champion_table else None},
        "policy": policy.model_dump(mode="json", by_alias=True),
    }
    plain: dict[str, Any] = jsonable(document)
    return plain


def report_json(report: SuiteReport, policy: Any, context: dict[str, Any]) -> str:
    return json.dumps(report_document(report, policy, context), indent=2, sort_keys=False)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report_markdown(report: SuiteReport, context: dict[str, Any]) -> str:
    lines = [f"# Gates for {report.model_name} v{report.version}: {report.verdict.upper()}", ""]
    champion = (f"v{report.champion_version}" if report.champion_version
                else "none (judged on the absolute gates)")
    lines += [f"- champion: {champion}"]
    lines += [f"- {key.replace('_', ' ')}: {value}" for key, value in context.items()
              if value not in (None, "")]
    if report.blocking:
        lines += [f"- blocking: {', '.join(r.name for r in report.blocking)}"]
    lines += ["", "| gate | status | blocking | observed | threshold | detail |",
              "|---|---|---|---|---|---|"]
    for r in report.results:
        detail = r.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r.name} | {_STATUS_MARK[r.status]} | {'yes' if r.blocking else 'no'} "
                     f"| {_number(r.observed)} | {_number(r.threshold)} | {detail} |")
    if report.headline:
        lines += ["", "## Headline numbers", "", "| number | value |", "|---|---|"]
        lines += [f"| {key} | {value:.6g} |" for key, value in sorted(report.headline.items())]
    if report.comparisons:
        lines += ["", "## Against the champion", "",
                  "| metric | candidate | 95% interval | champion | improvement | interval | "
                  "status |", "|---|---|---|---|---|---|---|"]
        for c in report.comparisons:
            interval = (f"[{c.candidate_interval.lower:.4g}, {c.candidate_interval.upper:.4g}]")
            improvement = (f"[{c.improvement_interval.lower:.4g}, "
                           f"{c.improvement_interval.upper:.4g}]" if c.improvement_interval
                           else "-")
            lines.append(f"| {c.key} | {c.candidate:.4g} | {interval} | {_number(c.champion)} | "
                         f"{_number(c.improvement)} | {improvement} | {c.status} |")
    if report.calibration and report.candidate_table:
        a = report.calibration
        shown = "; the table and diagram show top-label" if a.kind == "classwise" else ""
        lines += ["", f"## Reliability ({a.kind}, {len(a.primary_table.counts)} bins{shown})", "",
                  f"ECE {a.ece:.4f}, {a.level:.0%} interval [{a.lower:.4f}, {a.upper:.4f}] "
                  f"({a.method}); a perfectly calibrated model would show up to "
                  f"{a.null_quantile:.4f} on this holdout.", "",
                  "| bin | range | count | mean confidence | observed | gap |",
                  "|---|---|---|---|---|---|"]
        for row in report.candidate_table.rows():
            if row["count"]:
                lines.append(f"| {row['bin']} | ({row['lower']:.3f}, {row['upper']:.3f}] | "
                             f"{row['count']} | {row['mean_confidence']:.4f} | "
                             f"{row['observed_frequency']:.4f} | {row['gap']:+.4f} |")
        lines += ["", "![reliability diagram](reliability.png)"]
    return "\n".join(lines) + "\n"


def reliability_diagram_png(candidate: ReliabilityTable, champion: ReliabilityTable | None,
                            title: str, candidate_label: str = "candidate",
                            champion_label: str = "champion") -> bytes:
    """Observed frequency against mean confidence per bin, candidate vs champion, with the
    perfect-calibration diagonal, and the rows per bin underneath."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 8), dpi=100)
    FigureCanvasAgg(figure)
    curve, counts = figure.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1.3]}, sharex=True)
    figure.subplots_adjust(left=0.11, right=0.97, top=0.95, bottom=0.07, hspace=0.08)
    curve.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1,
               label="perfect calibration")
    series = [(candidate, candidate_label, "tab:blue")]
    if champion is not None:
        series.append((champion, champion_label, "tab:orange"))
    width = (candidate.edges[1:] - candidate.edges[:-1])
    centres = (candidate.edges[1:] + candidate.edges[:-1]) / 2
    for offset, (table, label, colour) in enumerate(series):
        filled = table.counts > 0
        curve.plot(table.mean_confidence[filled], table.observed_frequency[filled], marker="o",
                   color=colour, label=f"{label} (ECE {table.ece:.4f})")
        shift = (offset - (len(series) - 1) / 2) * width / len(series)
        bars = counts.bar(centres + shift, table.counts, width=width / len(series) * 0.9,
                          color=colour, alpha=0.7, label=label)
        for bar, count in zip(bars, table.counts, strict=True):
            if count:
                counts.annotate(str(int(count)), (bar.get_x() + bar.get_width() / 2,
                                                  bar.get_height()),
                                ha="center", va="bottom", fontsize=6, rotation=90)
    curve.set_ylabel("observed frequency")
    curve.set_xlim(0, 1)
    curve.set_ylim(0, 1)
    curve.set_title(title)
    curve.legend(loc="upper left", fontsize=8)
    curve.grid(alpha=0.3)
    counts.set_xlabel("mean predicted confidence")
    counts.set_ylabel("rows per bin")
    counts.set_ylim(0, max(table.counts.max() for table, _, _ in series) * 1.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

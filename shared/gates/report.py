"""The gate report as people read it: report.json, report.md and the reliability diagram PNG."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np

from shared.gates.calibration import ReliabilityTable, wilson_interval
from shared.gates.conformal import RegressionTestRows
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
                lines.append(f"| {row['bin']} | {bin_bounds(row['lower'], row['upper'])} | "
                             f"{row['count']} | {row['mean_confidence']:.4f} | "
                             f"{row['observed_frequency']:.4f} | {row['gap']:+.4f} |")
        lines += ["", "![reliability diagram](reliability.png)"]
    return "\n".join(lines) + "\n"


def _digits(low: float, high: float, least: int = 2) -> int:
    """Decimals enough to tell `low` from `high` (bins crowded near 0 need more than 3)."""
    digits = least
    while digits < 8 and round(low, digits) == round(high, digits):
        digits += 1
    return digits


def bin_bounds(low: float, high: float) -> str:
    """'(0.00012, 0.00031]' for the report's table, not '(0.000, 0.000]'."""
    width = abs(high - low)
    digits = 3 if width == 0 else min(10, max(3, 1 - math.floor(math.log10(width))))
    return f"({low:.{digits}f}, {high:.{digits}f}]"  # the width to two significant digits


def _bin_range(low: float, high: float) -> str:
    if max(abs(low), abs(high)) >= 1000:
        return f"{low:.4g}–{high:.4g}"
    digits = _digits(low, high)
    return f"{low:.{digits}f}–{high:.{digits}f}"


def diagram_title(title: str, verdict: str | None, ece: float | None,
                  ece_interval: tuple[float, float] | None, threshold: float | None) -> str:
    """'fraud v3 vs champion v2: FAILED' over 'ECE 0.031 [0.024, 0.039] (threshold 0.02)'."""
    head = f"{title}: {verdict.upper()}" if verdict else title
    if ece is None:
        return head
    figures = f"ECE {ece:.4f}"
    if ece_interval is not None:
        figures += f" [{ece_interval[0]:.4f}, {ece_interval[1]:.4f}]"
    if threshold is not None:
        figures += f" (threshold {threshold:g})"
    return f"{head}\n{figures}"


def reliability_diagram_png(candidate: ReliabilityTable, champion: ReliabilityTable | None,
                            title: str, candidate_label: str = "candidate",
                            champion_label: str = "champion", *, min_bin_count: int = 10,
                            confidence: float = 0.95) -> bytes:
    """Observed frequency against mean confidence per bin, with Wilson intervals, candidate vs
    champion and the perfect-calibration diagonal; bins with fewer than `min_bin_count` rows
    (too small to judge) are grey and hollow. Underneath, the rows per bin by bin number, with
    each bin's confidence range, so equal-mass bins crowded near 0 stay readable."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 8.5), dpi=100)
    FigureCanvasAgg(figure)
    curve, counts = figure.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1.4]})
    figure.subplots_adjust(left=0.11, right=0.97, top=0.92, bottom=0.12, hspace=0.3)
    curve.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1,
               label="perfect calibration")
    series = [(candidate, candidate_label, "tab:blue")]
    if champion is not None:
        series.append((champion, champion_label, "tab:orange"))
    small_shown = False
    for offset, (table, label, colour) in enumerate(series):
        filled = table.counts > 0
        judged = table.counts >= min_bin_count
        low, high = (np.clip(bound, 0, 1) for bound in wilson_interval(
            table.sum_outcome, table.counts, confidence))
        x, y = table.mean_confidence, table.observed_frequency
        curve.plot(x[judged], y[judged], color=colour, linewidth=1, alpha=0.6)
        curve.errorbar(x[judged], y[judged], yerr=[y[judged] - low[judged],
                                                   high[judged] - y[judged]],
                       fmt="o", color=colour, capsize=3, markersize=5,
                       label=f"{label} (ECE {table.ece:.4f}), {confidence:.0%} Wilson intervals")
        small = filled & ~judged
        if small.any():
            curve.errorbar(x[small], y[small], yerr=[y[small] - low[small],
                                                     high[small] - y[small]],
                           fmt="o", color="0.65", mfc="white", capsize=2, markersize=5,
                           label=None if small_shown else
                           f"bins under {min_bin_count} rows: too small to judge")
            small_shown = True
        index = np.arange(len(table.counts))
        width = 0.8 / len(series)
        shift = (offset - (len(series) - 1) / 2) * width
        bar_colours = [colour if n >= min_bin_count else "0.75" for n in table.counts]
        bars = counts.bar(index + shift, table.counts, width=width * 0.95, color=bar_colours,
                          alpha=0.85, label=label)
        for bar, count in zip(bars, table.counts, strict=True):
            counts.annotate(str(int(count)), (bar.get_x() + bar.get_width() / 2,
                                              bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
    curve.set_xlabel("mean predicted confidence")
    curve.set_ylabel("observed frequency")
    curve.set_xlim(0, 1)
    curve.set_ylim(0, 1)
    curve.set_title(title, fontsize=10)
    curve.legend(loc="upper left", fontsize=7)
    curve.grid(alpha=0.3)
    edges = candidate.edges
    counts.set_xticks(np.arange(len(edges) - 1),
                      [_bin_range(edges[i], edges[i + 1]) for i in range(len(edges) - 1)],
                      rotation=45, ha="right", fontsize=7)
    counts.set_xlabel(f"{candidate_label}'s confidence bins (grey: fewer than {min_bin_count} "
                      "rows, too small to judge)", fontsize=8)
    counts.set_ylabel("rows per bin")
    counts.set_ylim(0, max(table.counts.max() for table, _, _ in series) * 1.25 + 1)
    if champion is not None:
        counts.legend(fontsize=7, loc="upper right")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _prediction_bins(prediction: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-mass edges over the predictions (ties merge bins), so every bin holds rows."""
    edges = np.unique(np.quantile(prediction, np.linspace(0, 1, n_bins + 1)))
    return edges if len(edges) > 1 else np.array([edges[0], edges[0] + 1.0])


def regression_diagram_png(rows: RegressionTestRows, title: str, level: float, tolerance: float,
                           *, n_bins: int = 10, min_bin_count: int = 10,
                           confidence: float = 0.95) -> bytes:
    """The regression counterpart of the reliability diagram: the conformal intervals' coverage
    per prediction bin (equal mass), with Wilson intervals, against the target level and its
    tolerance band; bins under `min_bin_count` rows grey and hollow. Underneath, the mean
    interval width per bin with its row count, so where the model is unsure shows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    edges = _prediction_bins(rows.prediction, n_bins)
    which = np.clip(np.searchsorted(edges, rows.prediction, side="right") - 1, 0, len(edges) - 2)
    bins = len(edges) - 1
    counts = np.bincount(which, minlength=bins)
    hits = np.bincount(which, weights=rows.covered.astype(float), minlength=bins)
    widths = np.bincount(which, weights=rows.upper - rows.lower, minlength=bins)
    filled = counts > 0
    coverage = np.divide(hits, counts, out=np.zeros(bins), where=filled)
    mean_width = np.divide(widths, counts, out=np.zeros(bins), where=filled)
    low, high = (np.clip(bound, 0, 1) for bound in wilson_interval(hits, counts, confidence))

    figure = Figure(figsize=(7.5, 8.5), dpi=100)
    FigureCanvasAgg(figure)
    curve, width_panel = figure.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1.4]})
    figure.subplots_adjust(left=0.11, right=0.97, top=0.92, bottom=0.12, hspace=0.3)
    index = np.arange(bins)
    curve.axhspan(max(level - tolerance, 0), min(level + tolerance, 1), color="grey", alpha=0.15,
                  label=f"target {level:.0%} ± {tolerance:.0%}")
    curve.axhline(level, linestyle="--", color="grey", linewidth=1)
    judged = counts >= min_bin_count
    small = filled & ~judged
    curve.plot(index[judged], coverage[judged], color="tab:blue", linewidth=1, alpha=0.6)
    curve.errorbar(index[judged], coverage[judged],
                   yerr=[coverage[judged] - low[judged], high[judged] - coverage[judged]],
                   fmt="o", color="tab:blue", capsize=3, markersize=5,
                   label=f"coverage per bin, {confidence:.0%} Wilson intervals")
    if small.any():
        curve.errorbar(index[small], coverage[small],
                       yerr=[coverage[small] - low[small], high[small] - coverage[small]],
                       fmt="o", color="0.65", mfc="white", capsize=2, markersize=5,
                       label=f"bins under {min_bin_count} rows: too small to judge")
    curve.set_xlim(-0.5, bins - 0.5)
    curve.set_ylim(0, 1.02)
    curve.set_xticks(index, [])
    curve.set_ylabel("interval coverage (test rows)")
    curve.set_title(title, fontsize=10)
    curve.legend(loc="lower left", fontsize=7)
    curve.grid(alpha=0.3)
    colours = ["tab:blue" if n >= min_bin_count else "0.75" for n in counts]
    bars = width_panel.bar(index, mean_width, width=0.8, color=colours, alpha=0.85)
    for bar, count in zip(bars, counts, strict=True):
        width_panel.annotate(f"n={int(count)}", (bar.get_x() + bar.get_width() / 2,
                                                 bar.get_height()),
                             ha="center", va="bottom", fontsize=7)
    width_panel.set_xlim(-0.5, bins - 0.5)
    width_panel.set_xticks(index, [_bin_range(edges[i], edges[i + 1]) for i in range(bins)],
                           rotation=45, ha="right", fontsize=7)
    width_panel.set_xlabel("prediction bins (equal mass; grey: too few rows to judge)", fontsize=8)
    width_panel.set_ylabel("mean interval width")
    width_panel.set_ylim(0, float(mean_width.max()) * 1.25 + 1e-9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

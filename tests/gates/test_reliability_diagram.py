"""The reliability diagram says what the gates can and cannot tell: verdict and ECE interval in
the title, Wilson intervals per bin, bins too small to judge grey, readable bin ranges."""

from __future__ import annotations

import io

import numpy as np

from shared.gates.calibration import reliability_table
from shared.gates.report import _bin_range, bin_bounds, diagram_title, reliability_diagram_png


def test_the_title_carries_the_verdict_and_the_ece_interval():
    title = diagram_title("fraud v3 vs champion v2", "failed", 0.0312, (0.0241, 0.0398), 0.02)
    assert title == "fraud v3 vs champion v2: FAILED\nECE 0.0312 [0.0241, 0.0398] (threshold 0.02)"
    assert diagram_title("fraud v1 vs no champion", None, None, None, None) == \
        "fraud v1 vs no champion"


def test_bin_ranges_show_enough_digits_to_differ():
    assert _bin_range(0.0, 0.125) == "0.00–0.12"
    assert _bin_range(0.0001, 0.0004) == "0.0001–0.0004"


def test_small_bins_are_grey_and_every_bin_has_an_interval():
    from matplotlib.image import imread

    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.beta(1, 12, 220), rng.uniform(0.6, 1.0, 8)])  # 228 rows
    labels = (rng.random(scores.size) < scores).astype(int)
    table = reliability_table(scores, labels, n_bins=10, binning="equal_width")
    assert (table.counts[table.counts > 0] < 10).any()  # some bins too small to judge
    png = reliability_diagram_png(table, None, diagram_title(
        "demo v1 vs no champion", "inconclusive", 0.041, (0.012, 0.083), 0.02),
        candidate_label="v1", min_bin_count=10)
    pixels = imread(io.BytesIO(png))
    greys = np.isclose(pixels[..., 0], pixels[..., 1], atol=0.01) & np.isclose(
        pixels[..., 1], pixels[..., 2], atol=0.01) & np.isclose(pixels[..., 0], 0.75, atol=0.02)
    assert greys.sum() > 50  # the small bins' bars
    bluish = (pixels[..., 2] > pixels[..., 0] + 0.2)
    assert bluish.sum() > 200  # judged bins and their intervals


def test_the_report_table_prints_bin_bounds_that_differ():
    assert bin_bounds(0.0, 0.125) == "(0.000, 0.125]"
    assert bin_bounds(0.00012, 0.00031) == "(0.00012, 0.00031]"
    assert bin_bounds(0.0001, 0.0004) != "(0.000, 0.000]"


def test_regression_reports_get_a_coverage_and_width_picture():
    """Intervals of constant width on noise that grows with the prediction: they over-cover the
    low predictions and under-cover the high ones, and the picture shows where."""
    from matplotlib.image import imread

    from shared.gates.conformal import regression_coverage
    from shared.gates.evidence import diagrams
    from shared.gates.policy import GatePolicy
    from shared.gates.suite import ModelOutputs, SuiteInputs, run_suite

    rng = np.random.default_rng(5)
    x = rng.uniform(0, 3, 2000)
    y = 2 * x + rng.normal(0, 0.1 + 0.6 * x)
    coverage = regression_coverage(y, 2 * x, level=0.9)
    rows = coverage.test_rows
    assert rows is not None and len(rows.prediction) == coverage.n_test
    assert np.allclose(rows.upper - rows.lower, 2 * coverage.quantile)
    assert rows.covered.mean() == coverage.coverage
    low_half = rows.prediction < np.median(rows.prediction)
    assert rows.covered[low_half].mean() > 0.97 > 0.85 > rows.covered[~low_half].mean()

    policy = GatePolicy.model_validate({"task": "regression"})
    inputs = SuiteInputs("m", "2", labels=y, candidate=ModelOutputs(scores=2 * x))
    report = run_suite(inputs, policy)
    assert report.result("conformal").status != "skipped"
    found = diagrams(report, policy, inputs)
    assert list(found) == ["regression.png"]
    pixels = imread(io.BytesIO(found["regression.png"]))
    bluish = pixels[..., 2] > pixels[..., 0] + 0.2
    assert bluish.sum() > 500  # coverage points with their intervals, and the width bars
    band = np.isclose(pixels[..., 0], pixels[..., 1], atol=0.01) & (pixels[..., 0] < 0.95) & (
        pixels[..., 0] > 0.8)
    assert band.sum() > 1000  # the target band
    classifier_inputs = SuiteInputs("m", "2", labels=(y > 3).astype(int),
                                    candidate=ModelOutputs(scores=np.clip(x / 3, 0, 1)))
    assert "regression.png" not in diagrams(run_suite(classifier_inputs, GatePolicy()),
                                            GatePolicy(), classifier_inputs)

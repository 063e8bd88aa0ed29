"""The reliability diagram says what the gates can and cannot tell: verdict and ECE interval in
the title, Wilson intervals per bin, bins too small to judge grey, readable bin ranges."""

from __future__ import annotations

import io

import numpy as np

from shared.gates.calibration import reliability_table
from shared.gates.report import _bin_range, diagram_title, reliability_diagram_png


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

"""vismap.bench: the benchmark runs (smoke mode, tiny sizes) and reports every row, so it cannot
rot. Speed itself is measured by `make bench`, never asserted here."""

import math

import pytest
import torch

pytest.importorskip("captum")
pytest.importorskip("pytorch_grad_cam")
pytest.importorskip("torchvision")

from vismap import bench  # noqa: E402

METHODS = ["saliency", "guided_backprop", "deconvnet", "gradcam", "gradcam, upsampled",
           "layercam, upsampled", "guided_gradcam", "occlusion",
           "occlusion (captum batched)"]
# the methods pytorch-grad-cam has, and those captum lacks
PGC = {"guided_backprop", "gradcam, upsampled", "layercam, upsampled"}
NO_CAPTUM = {"layercam, upsampled"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.md"
    text = bench.main(["--smoke", "--out", str(out)])
    return text, out


def tables(text):
    """``{setting title: {method: [cells]}}`` from the markdown report."""
    found, title = {}, None
    for line in text.splitlines():
        if line.startswith("### "):
            title = line[4:]
            found[title] = {}
        elif line.startswith("| ") and not line.startswith("| method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            found[title][cells[0]] = cells
    return found


def test_smoke_report_has_every_row_with_finite_positive_times(smoke):
    text, out = smoke
    assert out.read_text() == text
    assert "logical CPUs" in text and torch.__version__ in text and "thread" in text
    assert text.count("One forward pass `F` of the batch") == 2
    found = tables(text)
    assert [t.split(":")[0] for t in found] == ["shapes-cnn", "resnet18 (random weights)"]
    for title, rows in found.items():
        assert list(rows) == METHODS, title
        for method, cells in rows.items():
            # method, limit, limit ms, vismap ms, captum ms, pgc ms, 3 ratios, what is timed
            assert len(cells) == 10 and cells[-1], cells
            bound, layout = cells[1].rstrip(")").split(" (")
            assert bound in bench.LIMITS and layout in ("NCHW", "channels-last"), cells
            has = {"limit": True, "vismap": True, "captum": method not in NO_CAPTUM,
                   "pgc": method in PGC}
            numbers = dict(zip(["limit", "vismap", "captum", "pgc"], cells[2:6]))
            ratios = dict(zip(["limit", "captum", "pgc"], cells[6:9]))
            for who, cell in numbers.items():
                if has[who]:
                    value = float(cell)
                    assert math.isfinite(value) and value > 0, (title, method, who, cell)
                else:
                    assert cell == "-", (title, method, who, cell)
            for who, cell in ratios.items():
                if has[who]:
                    assert cell.endswith("x") and float(cell[:-1]) > 0, (method, who, cell)
                else:
                    assert cell == "-"
        assert text.count("Grad-CAM <= 1.1x its limit") == len(found)


def test_time_together_interleaves_and_takes_medians():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    seconds = bench.time_together(fns, repeats=3, warmup=1)
    assert calls == list("abc" "abc" "bca" "cab")
    assert set(seconds) == set("abc") and all(s >= 0 for s in seconds.values())


def test_row_ratios():
    row = bench.Row("gradcam", "", "F+dA", {"limit": 1.0, "vismap": 1.5, "captum": 3.0})
    assert row.ratio("limit") == 1.5 and row.ratio("captum") == 0.5
    assert row.ratio("pytorch-grad-cam") is None
    lines = bench.targets([row, bench.Row("guided_backprop", "", "F+dx",
                                          {"limit": 2.0, "vismap": 2.0}),
                           bench.Row("occlusion", "", "P x F",
                                     {"limit": 1.0, "vismap": 1.0, "captum": 4.0})])
    assert "1.50x" in lines[0] and "MISSED" in lines[0]
    assert lines[1].endswith("met") and lines[2].endswith("met") and lines[3].endswith("met")

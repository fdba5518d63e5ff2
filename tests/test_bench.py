"""benchmarks/bench.py (`make bench`): the benchmark runs (smoke mode, tiny sizes) and reports a
row for every method of the registry that runs on the model, so it cannot rot. Speed itself is
measured by `make bench`, never asserted here."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("captum")
pytest.importorskip("pytorch_grad_cam")
pytest.importorskip("torchvision")
pytest.importorskip("zennit")

import vismap as vm  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "bench", Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
)
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench"] = bench  # its dataclasses look their module up while it loads
_spec.loader.exec_module(bench)

# the rows of each setting, in registry order: CAM only on the GAP network (ResNet-18), no
# factor maps (they explain a VAE) and no attention maps (they explain a transformer)
COMMON = [
    "saliency",
    "deconvnet",
    "guided_backprop",
    "gradient_x_input",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
    "occlusion (captum batched)",
]
LAYERED = [
    "gradcam",
    "gradcam, upsampled",
    "gradcam_pp, upsampled",
    "scorecam, upsampled",
    "scorecam, upsampled (pytorch-grad-cam batch 64)",
    "layercam, upsampled",
    "guided_gradcam",
]
# LRP only on shapes-cnn: ResNet-18's residual additions have no LRP rule in vismap
LRP = ["lrp", "lrp, zplus"]
ROWS = {
    "shapes-cnn": COMMON[:6] + LRP + COMMON[6:] + LAYERED,
    "resnet18 (random weights)": COMMON + ["cam"] + LAYERED,
}
# the methods pytorch-grad-cam has, and those captum lacks
PGC = {
    "guided_backprop",
    "gradcam, upsampled",
    "gradcam_pp, upsampled",
    "scorecam, upsampled",
    "scorecam, upsampled (pytorch-grad-cam batch 64)",
    "layercam, upsampled",
}
NO_CAPTUM = {
    "cam",
    "gradcam_pp, upsampled",
    "scorecam, upsampled",
    "scorecam, upsampled (pytorch-grad-cam batch 64)",
    "layercam, upsampled",
}


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


@pytest.mark.slow  # the whole benchmark, in smoke sizes
def test_smoke_report_has_every_row_with_finite_positive_times(smoke):
    text, out = smoke
    assert out.read_text() == text
    assert "logical CPUs" in text and torch.__version__ in text and "thread" in text
    assert text.count("One forward pass `F` of the batch") == 2
    found = tables(text)
    assert [t.split(":")[0] for t in found] == list(ROWS)
    assert "issue" not in text.lower()
    for title, rows in found.items():
        assert list(rows) == ROWS[title.split(":")[0]], title
        for method, cells in rows.items():
            # method, limit, limit ms, vismap, captum, pgc, zennit ms, 4 ratios, what is timed
            assert len(cells) == 12 and cells[-1], cells
            bound, layout = cells[1].rstrip(")").split(" (")
            assert bound in bench.LIMITS and layout in ("NCHW", "channels-last"), cells
            has = {
                "limit": True,
                "vismap": True,
                "captum": method not in NO_CAPTUM,
                "pgc": method in PGC,
                "zennit": method in LRP,
            }
            numbers = dict(
                zip(["limit", "vismap", "captum", "pgc", "zennit"], cells[2:7], strict=True)
            )
            ratios = dict(zip(["limit", "captum", "pgc", "zennit"], cells[7:11], strict=True))
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
    assert text.count("Score-CAM >= 2x faster than pytorch-grad-cam") == len(found)
    assert text.count("occlusion >= 2x faster than captum") == 1  # a target on shapes-cnn only


def test_every_registry_method_that_runs_on_the_model_has_a_row():
    names = {row.split(",")[0].split(" (")[0] for rows in ROWS.values() for row in rows}
    cnn = vm.models.shapes_cnn()
    assert names == {n for n, m in vm.explain.METHODS.items() if m.unmet(cnn) is None}
    assert {"factor_cam", "rollout", "chefer"}.isdisjoint(names)
    assert set(bench.PLANS) <= set(vm.explain.METHODS)


def test_time_together_interleaves_and_takes_medians():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    seconds = bench.time_together(fns, repeats=3, warmup=1)
    assert calls == list("abcabcbcacab")
    assert set(seconds) == set("abc") and all(s >= 0 for s in seconds.values())


def test_row_ratios():
    row = bench.Row("gradcam", "", "F+dA", {"limit": 1.0, "vismap": 1.5, "captum": 3.0})
    assert row.ratio("limit") == 1.5 and row.ratio("captum") == 0.5
    assert row.ratio("pytorch-grad-cam") is None
    lines = bench.targets(
        [
            row,
            bench.Row("guided_backprop", "", "F+dx", {"limit": 2.0, "vismap": 2.0}),
            bench.Row("occlusion", "", "P x F", {"limit": 1.0, "vismap": 1.0, "captum": 4.0}),
        ],
        "shapes-cnn",
    )
    assert "1.50x" in lines[0] and "MISSED" in lines[0]  # Grad-CAM vs its limit
    assert "0.50x" in lines[1] and lines[1].endswith("met")  # Grad-CAM <= 0.7x captum
    assert lines[2].endswith("met") and "occlusion <= 1.1x its limit" in lines[3]
    assert lines[4].startswith("- occlusion >= 2x faster than captum") and lines[4].endswith("met")
    assert len(lines) == 5  # no rows, no targets
    assert not any(
        "faster than captum" in line
        for line in bench.targets(
            [bench.Row("occlusion", "", "P x F", {"limit": 1.0, "vismap": 1.0, "captum": 4.0})],
            "resnet18",
        )
    )

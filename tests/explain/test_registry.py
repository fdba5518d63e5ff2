"""vismap.explain.registry and the package's layout: every entry complete, names and titles,
calls through an entry with the function's own defaults; today's public names of vm.explain;
one module per family, none over ~400 lines, no import circle, the registry on top."""

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import LAYERS
from torch import nn

import vismap as vm
from vismap import explain as E

LIB = Path(vm.__file__).parent


@pytest.fixture(scope="module")
def course(pretrained):
    return {name: pretrained(name) for name in ("shapes-cnn", "shapes-gap", "shapes-allconv")}


def test_course_layers_exist(course):
    assert E.METHODS["gradcam"].layered
    for name, model in course.items():
        assert isinstance(model.get_submodule(LAYERS[name]), (nn.Conv2d, nn.ReLU)), name


# ------------------------------------------------------------------ the registry


def test_registry_entries_are_complete_and_consistent():
    for name, entry in E.METHODS.items():
        assert entry.name == name == entry.function.__name__
        assert getattr(E, name) is entry.function and name in E.__all__
        assert entry.grain in ("fine", "coarse") and entry.paper and entry.title
        assert set(entry.needs) <= set(E.NEEDS), entry.needs
        parameters = inspect.signature(entry.function).parameters
        assert list(parameters)[:3] in (["model", "x", "target"], ["vae", "x", "dims"]), name
        assert set(entry.defaults) <= set(parameters), (name, entry.defaults)
        assert entry.layered == ("layer" in parameters), name
    titles = [entry.title for entry in E.METHODS.values()]
    assert len(set(titles)) == len(titles)
    expected = {
        "saliency",
        "deconvnet",
        "guided_backprop",
        "gradient_x_input",
        "smoothgrad",
        "integrated_gradients",
        "occlusion",
        "cam",
        "gradcam",
        "gradcam_pp",
        "scorecam",
        "layercam",
        "guided_gradcam",
        "factor_cam",
        "lrp",
        "rollout",
        "chefer",
    }
    assert set(E.METHODS) == expected


def test_get_method_by_name_or_title_and_its_error():
    assert E.get_method("gradcam") is E.METHODS["gradcam"]
    assert E.get_method("Grad-CAM") is E.METHODS["gradcam"]
    assert E.get_method("gradient") is E.METHODS["saliency"]
    with pytest.raises(ValueError) as err:
        E.get_method("gradcam++")
    message = str(err.value)
    assert "unknown method 'gradcam++'" in message
    assert all(name in message for name in E.METHODS)


def test_an_entry_calls_its_function_with_its_defaults_and_layer(course):
    model, x = course["shapes-cnn"], vm.data.make_shapes(2, seed=3).images
    torch.testing.assert_close(
        E.METHODS["gradcam"](model, x, 1, layer="features.6"),
        E.gradcam(model, x, 1, layer="features.6"),
    )
    torch.testing.assert_close(
        E.METHODS["occlusion"](model, x, 1, layer="ignored"),
        E.occlusion(model, x, 1, window=8, stride=4),
    )
    torch.testing.assert_close(
        E.METHODS["integrated_gradients"](model, x, 1, steps=3),
        E.integrated_gradients(model, x, 1, steps=3),
    )
    with pytest.raises(ValueError, match="'gradcam' needs a layer: pass layer="):
        E.METHODS["gradcam"](model, x, 1)


def test_integrated_gradients_runs_its_own_default_through_the_registry(course):
    # one default, the function's: 256 points (chapter 10's completeness measurement)
    entry = E.METHODS["integrated_gradients"]
    assert (
        entry.defaults["steps"]
        == 256
        == inspect.signature(E.integrated_gradients).parameters["steps"].default
    )
    model, x = course["shapes-cnn"], vm.data.make_shapes(2, seed=3).images
    torch.testing.assert_close(entry(model, x, 1), E.integrated_gradients(model, x, 1))
    # every entry's defaults are its function's keyword defaults, none added by the registry
    for name, entry in E.METHODS.items():
        parameters = inspect.signature(entry.function).parameters.values()
        assert entry.defaults == {
            p.name: p.default
            for p in parameters
            if p.kind is p.KEYWORD_ONLY and p.default is not p.empty
        }, name


# ------------------------------------------------------------------ the package's public names


# Every public name of vm.explain before it became a package (its __all__ then, and the names a
# reader could import from it: the registry's NEEDS, the types, the shared machinery), and the
# ReLU rules' new public home.
PUBLIC = [
    "saliency",
    "deconvnet",
    "guided_backprop",
    "zeiler_fergus",
    "occlusion",
    "cam",
    "gradcam",
    "layercam",
    "guided_gradcam",
    "layer_gradient",
    "normalize",
    "upsample",
    "gradient_x_input",
    "smoothgrad",
    "integrated_gradients",
    "path_rule",
    "gradcam_pp",
    "scorecam",
    "class_model",
    "adversarial",
    "Method",
    "METHODS",
    "get_method",
    "factor_score",
    "factor_cam",
    "STATISTICS",
    "MODES",
    "NEEDS",
    "RULES",
    "lrp",
    "LRP_RULES",
    # chapter 11's, added since: the maps of a transformer's attention
    "rollout",
    "chefer",
    "attention_maps",
]
MACHINERY = [
    "Layer",
    "Target",
    "capture",
    "check_baseline",
    "check_call",
    "check_count",
    "check_flag",
    "check_input",
    "check_model",
    "check_nonnegative",
    "check_target",
    "explaining",
    "fast_empty",
    "fast_layout",
    "forward",
    "inference_safe",
    "model_input",
    "relu_rule",
    "repeat_target",
    "resolve_layer",
    "slice_target",
    "target_classes",
    "target_scores",
]


@pytest.mark.parametrize("name", PUBLIC + MACHINERY)
def test_every_public_name_still_imports(name):
    namespace: dict = {}
    exec(f"from vismap.explain import {name}", namespace)
    assert namespace[name] is getattr(vm.explain, name)
    assert (name in E.__all__) == (name in PUBLIC)


def test_the_relu_rules_have_a_public_home():
    from vismap.explain.gradients import RULES, RuleReLU, relu_rule

    assert E.RULES is RULES and set(RULES) == {"gradient", "deconvnet", "guided"}
    assert E.relu_rule is relu_rule and issubclass(RuleReLU, torch.autograd.Function)


# ------------------------------------------------------------------ the layout


def modules() -> dict[str, Path]:
    """Every module of lib/vismap by its dotted name (a package by its __init__.py)."""
    found = {}
    for path in sorted(LIB.rglob("*.py")):
        parts = ["vismap", *path.relative_to(LIB).with_suffix("").parts]
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """The lib/vismap modules that ``name`` imports at import time (module level, also inside
    ``if``/``try``; not inside functions)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else []:
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    up = package.split(".")[: len(package.split(".")) - sub.level + 1]
                    base = ".".join(up + ([base] if base else []))
                found.add(base)
                found |= {f"{base}.{a.name}" for a in sub.names}  # `from . import data`
    return {m for m in found if m.startswith("vismap")}


def test_no_import_circle_among_the_library_modules():
    known = modules()
    graph = {name: imports(name, path) & set(known) - {name} for name, path in known.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError(" -> ".join(path[path.index(name) :] + [name]))
        if name in done:
            return
        for other in sorted(graph[name]):
            visit(other, path + [name])
        done.add(name)

    for name in graph:
        visit(name, [])
    # the registry on top: no family imports it (a method that resolves another by name
    # imports it inside the call)
    importers = [n for n, deps in graph.items() if "vismap.explain.registry" in deps]
    assert importers == ["vismap.explain"], importers
    assert graph["vismap.explain.factors"] >= {
        "vismap.explain.cams"
    }  # the family, not the registry


def test_one_short_module_per_family_and_no_e402():
    families = {p.stem for p in (LIB / "explain").glob("*.py")}
    assert families == {
        "__init__",
        "attention",
        "gradients",
        "deconvnet",
        "occlusion",
        "cams",
        "paths",
        "synthesis",
        "maps",
        "factors",
        "relevance",
        "registry",
    }
    for path in modules().values():
        text = path.read_text()
        assert "noqa: E402" not in text, path
        if path.parent.name == "explain" or path.name.startswith("_"):
            assert len(text.splitlines()) <= 400, (path, len(text.splitlines()))
    assert not (LIB / "_core.py").exists() and not (LIB / "explain.py").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "module",
    ["vismap.explain.factors", "vismap.explain.registry", "vismap.explain.cams", "vismap.metrics"],
)
def test_each_module_imports_first_in_a_fresh_interpreter(module):
    # the import order of a package's parents must not matter: e.g. vismap.explain.factors imported
    # first still finds vismap.explain.cams complete
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr

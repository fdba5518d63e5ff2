"""vismap.photos: ImageNet models from a fake torch hub cache, the offline error, every method on
VGG16 and ResNet-50 with random weights, photos and their bad inputs. No test uses the network.

The public names are used as ``vm.models.*`` (the course's one import path for them, checked by
``test_one_import_path``); ``P`` (:mod:`vismap.photos`) only for what a test patches. VGG16 and
ResNet-50 are built once for the module (``nets``); the tests that need them are marked slow
(``make test-fast`` leaves them out)."""

import socket
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import hook_count
from PIL import Image
from torchvision.models import ResNet50_Weights, VGG16_Weights

import vismap as vm
from vismap import photos as P

RESNET50_FILE = "resnet50-0676ba61.pth"  # torchvision's name for ResNet50_Weights.IMAGENET1K_V1
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def nets() -> dict[str, P.ImageNetModel]:
    """VGG16 and ResNet-50 with random weights (seed 0), built once for the module."""
    return {name: vm.models.imagenet(name, weights=None) for name in ("vgg16", "resnet50")}


def test_one_import_path():
    for name in P.__all__:
        assert name in vm.models.__all__, f"vm.models does not re-export {name}"
        assert getattr(vm.models, name) is getattr(P, name), name


# ------------------------------------------------------------------ the weights cache


@pytest.fixture(scope="module")
def fake_resnet50(nets, tmp_path_factory):
    """A ResNet-50 state dict unlike the seed-0 random one (its tensors + 1), saved once, as
    torchvision saves its weights; returns the file and the tensors."""
    state = {
        key: value + 1 if value.is_floating_point() else value.clone()
        for key, value in nets["resnet50"].model.state_dict().items()
    }
    path = tmp_path_factory.mktemp("weights") / RESNET50_FILE
    torch.save(state, path)
    return path, state


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub in a temporary TORCH_HOME; downloading is forbidden unless a test
    allows it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # as if torch.hub.set_dir was never called
    monkeypatch.delenv("VISMAP_OFFLINE", raising=False)

    def no_download(*args, **kwargs):
        raise AssertionError("the test tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    assert Path(torch.hub.get_dir()) == checkpoints.parent
    return checkpoints


def offline(monkeypatch) -> list:
    """Make download.pytorch.org unreachable; returns the list of probed URLs."""
    probed: list = []
    monkeypatch.setattr(P, "_reachable", lambda url, timeout=3.0: probed.append(url) or False)
    return probed


def test_weights_path_is_torchvisions_file_name(hub):
    assert vm.models.weights_path("resnet50") == hub / RESNET50_FILE
    assert vm.models.weights_path("vgg16") == hub / "vgg16-397923af.pth"
    assert vm.models.weights_path("resnet50", "IMAGENET1K_V2") == hub / "resnet50-11ad3fa6.pth"
    assert vm.models.weights_path("vgg16").name == Path(VGG16_Weights.IMAGENET1K_V1.url).name


@slow
def test_loads_the_cached_file_without_network(hub, fake_resnet50, monkeypatch):
    source, state = fake_resnet50
    hub.mkdir(parents=True)
    (hub / RESNET50_FILE).symlink_to(source)
    probed = offline(monkeypatch)
    net = vm.models.imagenet("resnet50")
    assert probed == []  # a cached file needs no network at all
    assert net.weights == "ResNet50_Weights.IMAGENET1K_V1" and net.pretrained
    loaded = net.model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert not net.model.training
    assert (
        len(net.categories) == 1000
        and net.categories == ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    )
    assert net.categories[281] == "tabby" and net.index("tiger cat") == 282
    assert net.layers["last_conv"] == "layer4"


@slow
def test_downloads_into_the_cache_when_reachable(hub, fake_resnet50, monkeypatch):
    source, state = fake_resnet50
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst), hash_prefix))
        Path(dst).write_bytes(source.read_bytes())

    monkeypatch.setattr(P, "_reachable", lambda url, timeout=3.0: True)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    net = vm.models.imagenet("resnet50")
    assert calls == [(ResNet50_Weights.IMAGENET1K_V1.url, hub / RESNET50_FILE, "0676ba61")]
    assert torch.equal(net.model.fc.weight, state["fc.weight"])
    vm.models.imagenet("resnet50")  # now cached: no second download
    assert len(calls) == 1


def test_offline_error_says_how_to_get_the_weights(hub, monkeypatch):
    probed = offline(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(vm.models.WeightsUnavailableError) as info:
        vm.models.imagenet("resnet50")
    assert time.perf_counter() - start < 2.0  # fails fast, no hang
    assert probed == [ResNet50_Weights.IMAGENET1K_V1.url]
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    for part in (
        RESNET50_FILE,
        str(hub),
        ResNet50_Weights.IMAGENET1K_V1.url,
        "online",
        "weights=None",
        "cannot be reached",
    ):
        assert part in message, part
    with pytest.raises(vm.models.WeightsUnavailableError, match="vgg16-397923af.pth"):
        vm.models.imagenet("vgg16")


def test_vismap_offline_never_probes(hub, monkeypatch):
    probed = offline(monkeypatch)
    monkeypatch.setenv("VISMAP_OFFLINE", "1")
    with pytest.raises(vm.models.WeightsUnavailableError, match="VISMAP_OFFLINE"):
        vm.models.imagenet("resnet50")
    assert probed == []


def test_failed_download_is_a_clear_error(hub, monkeypatch):
    def broken(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("connection reset")

    monkeypatch.setattr(P, "_reachable", lambda url, timeout=3.0: True)
    monkeypatch.setattr(torch.hub, "download_url_to_file", broken)
    with pytest.raises(
        vm.models.WeightsUnavailableError,
        match=r"downloading .* failed .*connection reset.*resnet50-0676ba61\.pth",
    ):
        vm.models.imagenet("resnet50")


@slow
def test_unreadable_cached_file(hub, monkeypatch):
    offline(monkeypatch)
    hub.mkdir(parents=True)
    (hub / RESNET50_FILE).write_bytes(b"half a download")
    with pytest.raises(vm.models.WeightsUnavailableError, match="cannot be read.*delete the file"):
        vm.models.imagenet("resnet50")
    torch.save({"fc.weight": torch.zeros(3, 3)}, hub / RESNET50_FILE)  # someone else's tensors
    with pytest.raises(vm.models.WeightsUnavailableError, match="does not hold resnet50's weights"):
        vm.models.imagenet("resnet50")


def test_reachability_probe_is_quick_and_local(monkeypatch):
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert P._reachable(f"https://127.0.0.1:{port}/model.pth", timeout=2.0)
    assert not P._reachable(f"https://127.0.0.1:{port}/model.pth", timeout=2.0)  # closed
    start = time.perf_counter()
    assert not P._reachable("https://no-such-host.invalid/model.pth", timeout=1.0)
    assert time.perf_counter() - start < 1.5


# ------------------------------------------------------------------ random weights


@slow
def test_random_weights_are_seeded_and_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = vm.models.imagenet("resnet18", weights=None)
    b = vm.models.imagenet("resnet18", weights="random", seed=0)
    c = vm.models.imagenet("resnet18", weights=None, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.weights is None and not a.pretrained and len(a.categories) == 1000
    assert torch.equal(a.model.conv1.weight, b.model.conv1.weight)
    assert not torch.equal(a.model.conv1.weight, c.model.conv1.weight)


@pytest.fixture(scope="module")
def x_small(nets):
    """Two photos, preprocessed, shrunk to 64x64 to keep the tests fast."""
    x = torch.cat(
        [nets["vgg16"].preprocess(vm.models.load_photo(p)) for p in ("chelsea", "coffee")]
    )
    return F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)


@slow
@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_preprocess_matches_torchvision(nets, name):
    net = nets[name]
    weights = {"vgg16": VGG16_Weights, "resnet50": ResNet50_Weights}[name].IMAGENET1K_V1
    photo = vm.models.load_photo("rocket")
    reference = weights.transforms()(torch.from_numpy(photo).permute(2, 0, 1))[None]
    x = net.preprocess(photo)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x, reference, atol=1e-6)
    assert torch.equal(net.preprocess(Image.fromarray(photo)), x)  # a PIL image too
    crop = net.crop(photo)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    assert np.allclose(net.denormalize(x), crop / 255, atol=1e-6)
    gray = net.crop(photo[:, :, 0])  # a grayscale array: three equal channels
    assert gray.shape == (224, 224, 3)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert net.preprocess(photo[:, :, 0]).shape == (1, 3, 224, 224)


@slow
def test_predict_and_index(nets, x_small):
    net = nets["resnet50"]
    top = net.predict(x_small, k=5)
    assert len(top) == 2 and all(len(row) == 5 for row in top)
    with torch.no_grad():
        logits = net.model(x_small)
    for row, scores in zip(top, logits, strict=True):
        probs = [p for _, p in row]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert row[0][0] == net.categories[int(scores.argmax())]
        assert abs(probs[0] - float(scores.softmax(0).max())) < 1e-6
    with pytest.raises(ValueError, match="'tiger cat'"):
        net.index("tiger kat")


@pytest.fixture(scope="module")
def computed() -> dict:
    """Maps that one test computes and another compares with: each is computed once."""
    return {}


def once(computed: dict, key: tuple, compute: Callable[[], object]) -> Any:
    if key not in computed:
        computed[key] = compute()
    return computed[key]


FINE = {
    "saliency": vm.explain.saliency,
    "deconvnet": vm.explain.deconvnet,
    "guided_backprop": vm.explain.guided_backprop,
}
COARSE = {
    "gradcam": vm.explain.gradcam,
    "layercam": vm.explain.layercam,
    "guided_gradcam": vm.explain.guided_gradcam,
}


@slow
@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
@pytest.mark.parametrize(
    "method", list(FINE) + list(COARSE) + ["occlusion", "cam", "zeiler_fergus"]
)
def test_every_method_on_both_architectures(nets, x_small, computed, name, method):
    net = nets[name]
    model, layer, target = net.model, net.layers["last_conv"], net.index("tiger cat")
    hooks, flags = hook_count(model), [p.requires_grad for p in model.parameters()]
    if method in FINE:
        maps = once(computed, (name, method), lambda: FINE[method](model, x_small, target))
        channels = 3
    elif method in COARSE:
        maps = COARSE[method](model, x_small, target, layer=layer)
        channels = 3 if method == "guided_gradcam" else 1
        if method != "layercam":  # the definition (a random net's Grad-CAM may be all zero)
            a, grad = once(
                computed,
                (name, "layer_gradient"),
                lambda: vm.explain.layer_gradient(model, x_small, target, layer),
            )
            expected = vm.explain.upsample(
                F.relu((grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True)), (64, 64)
            )
            if method == "guided_gradcam":
                guided = once(
                    computed,
                    (name, "guided_backprop"),
                    lambda: vm.explain.guided_backprop(model, x_small, target),
                )
                expected = expected * guided
            assert torch.allclose(maps, expected, atol=1e-6 * float(expected.abs().max()))
    elif method == "occlusion":
        maps, channels = vm.explain.occlusion(model, x_small, target, window=32, stride=32), 1
    elif method == "cam":
        if name == "vgg16":  # an FC head: CAM does not apply, and says so
            with pytest.raises(ValueError, match="gradcam"):
                vm.explain.cam(model, x_small, target, layer=layer)
            return
        maps, channels = vm.explain.cam(model, x_small, target, layer=layer), 1
        small_gc = vm.explain.gradcam(model, x_small, target, layer=layer, upsampled=False)
        small_cam = vm.explain.cam(model, x_small, target, layer=layer, upsampled=False)
        z = small_cam.shape[-2] * small_cam.shape[-1]  # Grad-CAM = ReLU(CAM) / Z on a GAP net
        assert torch.allclose(
            z * small_gc, small_cam.clamp(min=0), atol=1e-5 * float(small_cam.abs().max())
        )
    else:  # the explicit deconvnet needs a Sequential of conv/ReLU/pool: VGG's features
        if name == "resnet50":
            with pytest.raises(ValueError, match="Sequential"):
                vm.explain.zeiler_fergus(model, x_small, layer, channel=0)
            return
        maps, channels = vm.explain.zeiler_fergus(model, x_small, layer, channel=0), 3
    assert maps.shape == (2, channels, 64, 64)
    assert torch.isfinite(maps).all()
    if method not in ("gradcam", "guided_gradcam"):
        assert maps.flatten(1).abs().amax(1).gt(0).all(), "an all-zero map"
    assert hook_count(model) == hooks and not model.training
    assert [p.requires_grad for p in model.parameters()] == flags


@slow
@pytest.mark.parametrize(
    "name, stages",
    [
        ("vgg16", {"conv3_3": 56, "conv4_3": 28, "conv5_3": 14}),
        ("resnet50", {"layer2": 28, "layer3": 14, "layer4": 7}),
    ],
)
def test_suggested_layers_at_224(nets, name, stages):
    net = nets[name]
    modules = dict(net.model.named_modules())
    shapes = {}
    handles = [
        modules[net.layers[key]].register_forward_hook(
            lambda m, i, out, key=key: shapes.update({key: tuple(out.shape)})
        )
        for key in stages
    ]
    try:
        with torch.no_grad():
            net.model(net.preprocess(vm.models.load_photo("astronaut")))
    finally:
        for handle in handles:
            handle.remove()
    assert {key: shape[-2:] for key, shape in shapes.items()} == {
        key: (size, size) for key, size in stages.items()
    }
    assert net.layers["last_conv"] == net.layers[list(stages)[-1]]


# ------------------------------------------------------------------ photos and bad input


@pytest.mark.parametrize(
    "name, shape",
    [
        ("chelsea", (300, 451, 3)),
        ("coffee", (400, 600, 3)),
        ("astronaut", (512, 512, 3)),
        ("rocket", (427, 640, 3)),
    ],
)
def test_bundled_photos(name, shape):
    photo = vm.models.load_photo(name)
    assert name in vm.models.PHOTOS
    assert photo.shape == shape and photo.dtype == np.uint8


def test_photo_from_a_file(tmp_path):
    chelsea = vm.models.load_photo("chelsea")
    Image.fromarray(chelsea).save(tmp_path / "cat.png")
    assert np.array_equal(vm.models.load_photo(tmp_path / "cat.png"), chelsea)
    assert np.array_equal(vm.models.load_photo(str(tmp_path / "cat.png")), chelsea)


def test_grayscale_and_alpha_become_rgb(tmp_path):
    gray = vm.models.load_photo("chelsea")[:, :, 1]
    Image.fromarray(gray).save(tmp_path / "gray.png")  # mode "L"
    photo = vm.models.load_photo(tmp_path / "gray.png")
    assert photo.shape == gray.shape + (3,) and photo.dtype == np.uint8
    assert all(np.array_equal(photo[:, :, c], gray) for c in range(3))

    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")  # 16 bits
    assert np.array_equal(vm.models.load_photo(tmp_path / "gray16.png")[:, :, 0], gray)

    rgba = np.dstack([vm.models.load_photo("coffee"), np.full((400, 600), 7, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(vm.models.load_photo(tmp_path / "rgba.png"), rgba[:, :, :3])


def test_missing_path(tmp_path):
    missing = tmp_path / "no_such_cat.jpg"
    with pytest.raises(FileNotFoundError, match="no_such_cat.jpg.*does not exist"):
        vm.models.load_photo(missing)
    with pytest.raises(FileNotFoundError, match="folder"):
        vm.models.load_photo(tmp_path)
    with pytest.raises(FileNotFoundError, match="chelsea, coffee"):  # a misspelt name
        vm.models.load_photo("chelsae")


def test_not_an_image(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    with pytest.raises(ValueError, match="notes.png.*not an image"):
        vm.models.load_photo(text)
    Image.fromarray(vm.models.load_photo("chelsea")).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # a truncated file
    with pytest.raises(ValueError, match="cut.png"):
        vm.models.load_photo(tmp_path / "cut.png")
    with pytest.raises(TypeError, match="name .* or a path"):
        vm.models.load_photo(np.zeros((4, 4, 3), np.uint8))


def test_unknown_architecture_and_weights():
    with pytest.raises(ValueError, match="unknown architecture 'alexnet'.*vgg16.*resnet50"):
        vm.models.imagenet("alexnet")
    with pytest.raises(ValueError, match="unknown architecture"):
        vm.models.imagenet("alexnet", weights=None)
    with pytest.raises(ValueError, match="unknown weights 'cifar'.*IMAGENET1K_V1"):
        vm.models.imagenet("vgg16", weights="cifar")
    with pytest.raises(ValueError, match="unknown weights"):
        vm.models.imagenet(
            "vgg16", weights=ResNet50_Weights.IMAGENET1K_V1
        )  # another architecture's

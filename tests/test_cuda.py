"""The methods on a GPU: same maps as on the CPU, on the input's device (skipped without CUDA)."""

import pytest
import torch
from conftest import hook_count

import vismap as vm
from vismap import explain as E

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# every classifier method of the registry (CAM on the GAP network), with fast options
OPTIONS = {
    "smoothgrad": {"samples": 3},
    "integrated_gradients": {"steps": 8},
    "occlusion": {"window": 8, "stride": 8},
}
NAMES = [n for n, m in E.METHODS.items() if "VAE" not in m.needs]


def run(name, model, x, t):
    entry, options = E.METHODS[name], dict(OPTIONS.get(name, {}))
    if name == "smoothgrad":  # the same noise on both devices: drawn on the CPU
        options["generator"] = torch.Generator().manual_seed(0)
    layer = "features.10" if "GAP" in entry.needs else "features.9"
    return entry(model, x, t, layer=layer, **options)


@pytest.mark.parametrize("name", NAMES + ["zeiler_fergus"])
def test_gpu_maps_equal_cpu_maps(name):
    torch.backends.cudnn.allow_tf32 = False  # compare in full float32
    torch.backends.cuda.matmul.allow_tf32 = False
    d = vm.data.make_shapes(8, seed=3)
    model_name = (
        "shapes-gap" if name in E.METHODS and "GAP" in E.METHODS[name].needs else "shapes-cnn"
    )
    cpu_model = vm.models.load_pretrained(model_name)
    gpu_model = vm.models.load_pretrained(model_name).cuda()
    x, t = d.images.cuda(), d.labels.cuda()
    if name == "zeiler_fergus":
        got = E.zeiler_fergus(gpu_model, x, "features.9", channel=3)
        want = E.zeiler_fergus(cpu_model, d.images, "features.9", channel=3)
    else:
        got, want = run(name, gpu_model, x, t), run(name, cpu_model, d.images, d.labels)
    assert got.device.type == "cuda"
    scale = want.abs().max().clamp(min=1e-6)
    assert ((got.cpu() - want).abs().max() / scale) < 1e-4
    assert all(p.device.type == "cuda" for p in gpu_model.parameters())
    assert hook_count(gpu_model) == 0


def test_class_model_and_adversarial_on_gpu():
    model = vm.models.load_pretrained("shapes-cnn").cuda()
    image = E.class_model(model, 2, steps=20)
    assert image.device.type == "cuda" and image.shape == (1, 3, 64, 64)
    d = vm.data.make_shapes(4, seed=4)
    adv = E.adversarial(model, d.images.cuda(), d.labels.cuda(), eps=4 / 255, steps=3)
    assert adv.device.type == "cuda" and (adv.cpu() - d.images).abs().max() <= 4 / 255 + 1e-6


def test_cam_on_gpu():
    d = vm.data.make_shapes(4, seed=4)
    model = vm.models.load_pretrained("shapes-gap").cuda()
    maps = E.cam(model, d.images.cuda(), d.labels.cuda(), layer="features.10")
    assert maps.device.type == "cuda" and maps.shape == (4, 1, 64, 64)


@pytest.mark.parametrize("statistic", ["mu", "kl"])
@pytest.mark.parametrize("mode", ["gradcam", "elementwise"])
def test_factor_cam_on_gpu_equals_cpu(statistic, mode):
    torch.backends.cudnn.allow_tf32 = False
    x = vm.data.make_sprites(8, seed=5).images
    cpu = vm.models.load_pretrained("sprites-vae")
    gpu = vm.models.load_pretrained("sprites-vae").cuda()
    want = E.factor_cam(cpu, x, [0, 4, 9], statistic=statistic, mode=mode)
    got = E.factor_cam(gpu, x.cuda(), [0, 4, 9], statistic=statistic, mode=mode)
    assert got.device.type == "cuda"
    assert ((got.cpu() - want).abs().max() / want.abs().max().clamp(min=1e-6)) < 1e-4


def test_vae_training_step_on_gpu():
    model = vm.vae.SpritesVAE().cuda()
    out = vm.vae.vae_loss(model, vm.data.make_sprites(16, seed=1).images.cuda(), beta=4.0, tc=1.0)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["loss"].device.type == "cuda"

"""The methods on a GPU: same maps as on the CPU, on the input's device (skipped without CUDA)."""

import pytest
import torch

import vismap as vm
from vismap import explain as E

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

METHODS = {
    "saliency": E.saliency,
    "deconvnet": E.deconvnet,
    "guided_backprop": E.guided_backprop,
    "occlusion": lambda m, x, t: E.occlusion(m, x, t, window=8, stride=8),
    "gradcam": lambda m, x, t: E.gradcam(m, x, t, layer="features.9"),
    "layercam": lambda m, x, t: E.layercam(m, x, t, layer="features.9"),
    "guided_gradcam": lambda m, x, t: E.guided_gradcam(m, x, t, layer="features.9"),
    "zeiler_fergus": lambda m, x, t: E.zeiler_fergus(m, x, "features.9", channel=3),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_gpu_maps_equal_cpu_maps(name):
    torch.backends.cudnn.allow_tf32 = False  # compare in full float32
    torch.backends.cuda.matmul.allow_tf32 = False
    d = vm.data.make_shapes(8, seed=3)
    cpu_model = vm.models.load_pretrained("shapes-cnn")
    gpu_model = vm.models.load_pretrained("shapes-cnn").cuda()
    x, t = d.images.cuda(), d.labels.cuda()
    got = METHODS[name](gpu_model, x, t)
    want = METHODS[name](cpu_model, d.images, d.labels)
    assert got.device.type == "cuda"
    scale = want.abs().max().clamp(min=1e-6)
    assert ((got.cpu() - want).abs().max() / scale) < 1e-4
    assert all(p.device.type == "cuda" for p in gpu_model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in gpu_model.modules())


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

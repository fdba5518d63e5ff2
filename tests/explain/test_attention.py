"""vismap.vit and the maps of a vision transformer (explain/attention.py, tokens in _layers.py):
attention rollout and Chefer et al.'s map hand-computed on a tiny ViT in float64, Grad-CAM on a
block's tokens against its definition and against pytorch-grad-cam, the ViT block against
timm's, and the bad inputs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_maps_close, float64, hook_count, raises_own
from torch import nn

import vismap as vm
from vismap import explain as E
from vismap.vit import ShapesViT


def tiny_vit(depth: int = 2, seed: int = 0) -> ShapesViT:
    """An 8x8-pixel ViT with 4x4 patches (a 2x2 grid, T = 5 tokens), D = 4, 2 heads, 3 classes,
    the paper's linear patch embedding (no stem: the maps read the blocks, not the embedding),
    float64, every weight drawn at a scale that makes the attention far from uniform."""
    torch.manual_seed(seed)
    model = ShapesViT(3, image_size=8, patch=4, dim=4, depth=depth, heads=2, stem=False).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.7)
    return model.eval()


def tiny_x(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(
        n, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def by_hand(model: ShapesViT, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The ViT's forward written out from the paper's equations, with no module call but the
    parameters: its scores and every block's attention ``A_l (n, heads, T, T)``, on one graph."""
    n, p = len(x), model.patch_embed.kernel_size[0]
    x = (x - model.pixel_mean) / model.pixel_std  # the input standardised
    patches = F.unfold(x, p, stride=p).transpose(1, 2)  # (n, N, 3 p p), row by row
    e = model.patch_embed.weight.flatten(1)
    z = torch.cat([model.cls_token.expand(n, 1, -1), patches @ e.T + model.patch_embed.bias], 1)
    z = z + model.pos_embed
    attentions = []
    for block in model.blocks:
        heads, dim = block.attn.heads, z.shape[-1]
        d = dim // heads
        u = F.layer_norm(z, (dim,), block.norm1.weight, block.norm1.bias, 1e-6)
        q, k, v = (u @ block.attn.qkv.weight.T + block.attn.qkv.bias).split(dim, -1)
        q, k, v = (t.unflatten(-1, (heads, d)).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        a = scores.exp() / scores.exp().sum(-1, keepdim=True)
        attentions.append(a)
        mixed = (a @ v).transpose(1, 2).flatten(2)
        z = z + mixed @ block.attn.proj.weight.T + block.attn.proj.bias
        u = F.layer_norm(z, (dim,), block.norm2.weight, block.norm2.bias, 1e-6)
        hidden = u @ block.mlp.fc1.weight.T + block.mlp.fc1.bias
        hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # GELU
        z = z + hidden @ block.mlp.fc2.weight.T + block.mlp.fc2.bias
    out = F.layer_norm(z[:, 0], (z.shape[-1],), model.norm.weight, model.norm.bias, 1e-6)
    return out @ model.head.weight.T + model.head.bias, attentions


@pytest.mark.portable
def test_the_forward_by_hand_is_the_models():
    model, x = tiny_vit(), tiny_x()
    scores, attentions = by_hand(model, x)
    torch.testing.assert_close(scores, model(x), rtol=0, atol=1e-12)
    assert len(attentions) == 2 and attentions[0].shape == (2, 2, 5, 5)
    got, _ = E.attention_maps(model, x, 0, gradients=False)
    for a, b in zip(got, attentions, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-12)


# ------------------------------------------------------------------ rollout


@pytest.mark.portable
@pytest.mark.parametrize("depth, value", [(1, 1 / 2), (2, 3 / 4)])
def test_rollout_of_uniform_attention_by_hand(depth, value):
    # Q = K = 0: every attention row is 1/T. One block: A^ = (U + I)/2 with U = 11^T/T; two:
    # A^2 = (U + 2U + I)/4 = 3/4 U + 1/4 I. The class token's row over a patch: value / T.
    model = tiny_vit(depth)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[:8] = 0
            block.attn.qkv.bias[:8] = 0
    maps = E.rollout(model, tiny_x(), 0, upsampled=False)
    assert maps.shape == (2, 1, 2, 2)
    torch.testing.assert_close(maps, torch.full_like(maps, value / 5), rtol=0, atol=1e-15)


@pytest.mark.portable
@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_by_hand(fusion):
    model, x = tiny_vit(), tiny_x()
    _, attentions = by_hand(model, x)
    want = []
    for i in range(len(x)):  # one image at a time, one entry at a time
        r = torch.eye(5, dtype=torch.float64)
        for a in attentions:
            heads = a[i].detach()
            fused = {"mean": heads.mean(0), "max": heads.amax(0), "min": heads.amin(0)}[fusion]
            mixed = 0.5 * fused + 0.5 * torch.eye(5, dtype=torch.float64)
            mixed = torch.stack([row / row.sum() for row in mixed])
            r = mixed @ r
        want.append(r[0, 1:].reshape(1, 2, 2))
    got = E.rollout(model, x, 0, head_fusion=fusion, upsampled=False)
    assert_maps_close(got, torch.stack(want), 1e-12)
    up = E.rollout(model, x, 0, head_fusion=fusion)
    assert_maps_close(up, E.upsample(torch.stack(want), (8, 8)), 1e-12)


def test_rollout_is_the_same_for_every_class_and_chefer_is_not():
    model, x = tiny_vit(), tiny_x()
    assert torch.equal(E.rollout(model, x, 0), E.rollout(model, x, 2))
    assert not torch.allclose(E.chefer(model, x, 0), E.chefer(model, x, 2))


# ------------------------------------------------------------------ Chefer et al.


@pytest.mark.portable
def test_chefer_by_hand():
    model, x = tiny_vit(), tiny_x()
    target = torch.tensor([1, 2])
    scores, attentions = by_hand(model, x)
    grads = torch.autograd.grad(scores.gather(1, target[:, None]).sum(), attentions)
    want = []
    for i in range(len(x)):
        r = torch.eye(5, dtype=torch.float64)
        for a, g in zip(attentions, grads, strict=True):
            a_bar = sum(torch.clamp(g[i, h] * a[i, h].detach(), min=0) for h in range(2)) / 2
            r = r + a_bar @ r
        want.append(r[0, 1:].reshape(1, 2, 2))
    got = E.chefer(model, x, target, upsampled=False)
    assert_maps_close(got, torch.stack(want), 1e-12)


@pytest.mark.portable
def test_attention_gradient_is_the_total_derivative():
    # dy/dA_1 by central differences: a change of one entry of the first block's attention
    # reaches the score also through the second block's attention
    model, x = tiny_vit(), tiny_x(1)
    _, grads = E.attention_maps(model, x, 1)
    assert grads is not None
    eps = 1e-6
    for index in [(0, 0, 0, 1), (0, 1, 3, 2), (0, 0, 4, 0)]:

        def nudged(step: float, index: tuple = index) -> float:
            def hook(_m, _i, out):
                out = out.clone()
                out[index] += step
                return out

            handle = model.blocks[0].attn.probs.register_forward_hook(hook)
            try:
                with torch.no_grad():
                    return model(x)[0, 1].item()
            finally:
                handle.remove()

        slope = (nudged(eps) - nudged(-eps)) / (2 * eps)
        assert abs(slope - grads[0][index].item()) <= 1e-7 * max(1.0, abs(slope)), index


# ------------------------------------------------------------------ Grad-CAM on tokens


class ToTokens(nn.Module):
    def forward(self, a):
        return a.flatten(2).transpose(1, 2)  # (n, K, h, w) -> (n, h w, K), row by row


class Tokenised(nn.Module):
    """A CNN that hands its 4x8 feature maps on as 32 tokens (no class token): ``tokens``
    outputs ``(n, 32, 4)``, the conv's maps row by row."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 4, 8, stride=8)
        self.tokens = ToTokens()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.tokens(self.conv(x)).square().mean(1))


@pytest.mark.portable
def test_gradcam_at_a_block_is_gradcam_of_its_patch_tokens_on_the_grid():
    model, x = tiny_vit(), tiny_x()
    recorded = {}
    handle = model.blocks[0].register_forward_hook(lambda m, i, out: recorded.update(z=out))
    scores = model(x)
    handle.remove()
    z = recorded["z"]
    (g,) = torch.autograd.grad(scores[:, 2].sum(), z)
    a = z[:, 1:].detach().reshape(2, 2, 2, 4).permute(0, 3, 1, 2)  # (n, D, h, w), row by row
    g = g[:, 1:].reshape(2, 2, 2, 4).permute(0, 3, 1, 2)
    want = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    got = E.gradcam(model, x, 2, layer="blocks.0", upsampled=False)
    assert_maps_close(got, want, 1e-12)
    layer = E.layercam(model, x, 2, layer="blocks.0", upsampled=False)
    assert_maps_close(layer, F.relu((F.relu(g) * a).sum(1, keepdim=True)), 1e-12)


@pytest.mark.portable
def test_tokens_declared_by_hand_are_the_conv_maps():
    model, x = Tokenised().double(), torch.rand(2, 3, 32, 64, dtype=torch.float64)
    on_maps = E.gradcam(model, x, 1, layer="conv")
    on_tokens = E.gradcam(model, x, 1, layer="tokens", tokens=(4, 8))
    assert_maps_close(on_tokens, on_maps, 1e-12)
    assert on_maps.abs().sum() > 0
    transposed = E.gradcam(model, x, 1, layer="tokens", tokens=(8, 4))
    assert transposed.shape == on_maps.shape and not torch.allclose(
        E.normalize(transposed), E.normalize(on_maps)
    )


def test_a_grid_that_does_not_fit_is_named():
    model, x = Tokenised(), torch.rand(2, 3, 32, 64)
    message = raises_own(ValueError, ("32 tokens",), lambda: E.gradcam(model, x, 0, layer="tokens"))
    assert "'tokens'" in message and "tokens=(h, w)" in message and "(1, 31)" in message
    raises_own(
        ValueError,
        ("at most 32",),
        lambda: E.gradcam(model, x, 0, layer="tokens", tokens=(6, 6)),
    )
    raises_own(TypeError, ("tokens",), lambda: E.gradcam(model, x, 0, layer="tokens", tokens=4))
    raises_own(
        TypeError, ("tokens",), lambda: E.gradcam(model, x, 0, layer="tokens", tokens=(4.5, 2))
    )
    vit = tiny_vit()
    message = raises_own(
        ValueError,
        ("num_prefix_tokens",),
        lambda: E.gradcam(vit, tiny_x(), 0, layer="blocks.0", tokens=(1, 3)),
    )
    assert "h * w must be 4" in message
    assert hook_count(model) == 0 and hook_count(vit) == 0


# ------------------------------------------------------------------ the attention methods' inputs


def test_a_cnn_has_no_attention(pretrained):
    cnn, x = pretrained("shapes-cnn"), vm.data.make_shapes(2, seed=3).images
    for method in (E.rollout, E.chefer):
        message = raises_own(
            ValueError, ("needs attention modules",), lambda m=method: m(cnn, x, 0)
        )
        assert "ShapesNet has none" in message and "gradcam" in message
    assert hook_count(cnn) == 0
    for name in ("rollout", "chefer"):
        assert "needs attention modules" in E.METHODS[name].unmet(cnn)
        assert E.METHODS[name].unmet(tiny_vit()) is None
    assert E.METHODS["guided_backprop"].unmet(tiny_vit()).startswith("needs ReLUs")
    assert E.METHODS["factor_cam"].unmet(cnn).startswith("needs a VAE")
    assert E.METHODS["gradcam"].unmet(tiny_vit()) is None


def test_attention_bad_inputs():
    model, x = tiny_vit(), tiny_x()
    raises_own(ValueError, ("head_fusion",), lambda: E.rollout(model, x, 0, head_fusion="sum"))
    raises_own(TypeError, ("upsampled",), lambda: E.rollout(model, x, 0, upsampled="yes"))
    raises_own(ValueError, ("target class(es) [7]",), lambda: E.rollout(model, x, 7))
    raises_own(ValueError, ("target class(es) [7]",), lambda: E.chefer(model, x, 7))
    raises_own(ValueError, ("x is torch.float32",), lambda: E.chefer(model, x.float(), 0))

    class Bare(nn.Module):  # the same ViT, without its declared token layout
        def __init__(self):
            super().__init__()
            self.vit = tiny_vit()

        def forward(self, x):
            return self.vit(x)

    bare = Bare()
    assert torch.equal(E.rollout(bare, x, 0), E.rollout(model, x, 0))  # 5 = 1 + 2 x 2
    raises_own(ValueError, ("no class token",), lambda: E.rollout(bare, x, 0, tokens=(1, 5)))
    assert hook_count(model) == 0 and hook_count(bare) == 0


def test_a_softmax_that_is_no_attention_is_named():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3), nn.Softmax(dim=-1))
    raises_own(
        ValueError, ("'2'", "(n, heads, T, T)"), lambda: E.rollout(model, tiny_x().float(), 0)
    )
    assert hook_count(model) == 0

    class Unused(nn.Module):  # an attention module its forward never calls
        def __init__(self):
            super().__init__()
            self.probs = nn.Softmax(dim=-1)
            self.head = nn.Linear(3 * 8 * 8, 3)

        def forward(self, x):
            return self.head(x.flatten(1))

    for method in (E.rollout, E.chefer):
        raises_own(ValueError, ("not used",), lambda m=method: m(Unused(), tiny_x().float(), 0))


# ------------------------------------------------------------------ the shipped ViT


@pytest.fixture(scope="module")
def vit64(pretrained) -> nn.Module:
    return float64(pretrained("shapes-vit"))


def test_shapes_vit_is_the_papers_architecture(pretrained):
    vit = pretrained("shapes-vit")
    assert vit.input_size == (3, 64, 64) and vit.token_grid == (8, 8)
    assert vit.num_prefix_tokens == 1 and vit.pos_embed.shape == (1, 65, vit.head.in_features)
    names = dict(vit.named_modules())
    assert {f"blocks.{i}" for i in range(len(vit.blocks))} <= set(names)
    depth = len(vit.blocks)
    assert depth >= 2
    assert all(isinstance(names[f"blocks.{i}.attn.probs"], nn.Softmax) for i in range(depth))
    assert any(isinstance(m, nn.GELU) for m in vit.modules())
    assert [n for n, _ in E.attention.attention_modules(vit)] == [
        f"blocks.{i}.attn.probs" for i in range(depth)
    ]


@pytest.mark.portable
def test_the_block_is_timms(vit64):
    timm = pytest.importorskip("timm")
    block = vit64.blocks[1]
    theirs = timm.models.vision_transformer.Block(64, num_heads=4, mlp_ratio=2.0, qkv_bias=True)
    theirs.load_state_dict(block.state_dict())
    z = torch.randn(3, 65, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(block(z), theirs.double().eval()(z), rtol=0, atol=1e-12)


@pytest.mark.portable
@pytest.mark.parametrize("layer", ["blocks.0", "blocks.1", "last.norm1"])
def test_token_gradcam_matches_pytorch_grad_cam(vit64, layer):
    lib = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def reshape_transform(tokens: torch.Tensor) -> torch.Tensor:  # drop the class token
        return tokens[:, 1:].reshape(len(tokens), 8, 8, -1).permute(0, 3, 1, 2)

    x = vm.data.make_shapes(4, seed=41, objects=2).images.double()
    targets = [1, 4, 2, 0]
    layer = layer.replace("last", f"blocks.{len(vit64.blocks) - 1}")
    reference = copy.deepcopy(vit64)
    cam = lib.GradCAM(reference, [reference.get_submodule(layer)], reshape_transform)
    want = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    got = E.normalize(E.gradcam(vit64, x, torch.tensor(targets), layer=layer))[:, 0]
    assert got.abs().sum() > 0
    # pytorch-grad-cam min-max normalises and resizes with OpenCV in float32
    assert_maps_close(got, torch.from_numpy(want).to(got.dtype), 1e-5, msg=layer)


def test_gradcam_at_the_last_block_is_zero_also_in_pytorch_grad_cam(vit64):
    # By design of a class-token head: the score reads the last block's class token only
    # (layer norm and head act on each token alone), so the last block's patch tokens have no
    # gradient; pytorch-grad-cam's documentation points at blocks[-1].norm1 for this reason.
    lib = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = vm.data.make_shapes(2, seed=42).images.double()
    last = f"blocks.{len(vit64.blocks) - 1}"
    _, grad = E.layer_gradient(vit64, x, 1, last)
    assert grad.eq(0).all()
    assert E.gradcam(vit64, x, 1, layer=last).eq(0).all()
    assert E.gradcam(vit64, x, 1, layer=f"{last}.norm1").abs().sum() > 0
    reference = copy.deepcopy(vit64)
    cam = lib.GradCAM(
        reference,
        [reference.blocks[-1]],
        lambda t: t[:, 1:].reshape(len(t), 8, 8, -1).permute(0, 3, 1, 2),
    )
    want = cam(input_tensor=x, targets=[ClassifierOutputTarget(1)] * 2)
    assert (want == 0).all()


def test_the_input_gradient_methods_work_unchanged(pretrained):
    vit = pretrained("shapes-vit")
    x = vm.data.make_shapes(2, seed=43).images
    for method in (E.saliency, E.gradient_x_input, E.integrated_gradients):
        maps = method(vit, x, 1)
        assert maps.shape == x.shape and torch.isfinite(maps).all() and maps.abs().sum() > 0
    assert hook_count(vit) == 0

"""The beta-VAE, disentanglement measures and factor activation maps (chapter 07)."""

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import vismap as vm
from vismap.vae import SpritesVAE, kl_per_dim, total_correlation, vae_loss


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return SpritesVAE().eval()


@pytest.fixture(scope="module")
def sprites():
    return vm.data.make_sprites(6, seed=3)


# ---------------------------------------------------------------------------- the model


def test_encoder_returns_posterior_and_decoder_logits(vae, sprites):
    mu, logvar = vae(sprites.images)
    assert mu.shape == logvar.shape == (6, vm.vae.LATENTS)
    assert vae.decode(mu).shape == (6, 1, 64, 64)
    rec = vae.reconstruct(sprites.images)
    assert rec.min() >= 0 and rec.max() <= 1


def test_encoder_rejects_wrong_shape(vae):
    with pytest.raises(ValueError, match=r"\(n, 1, 64, 64\).*\(2, 3, 64, 64\)"):
        vae(torch.zeros(2, 3, 64, 64))


def test_kl_per_dim_is_the_gaussian_kl():
    mu, logvar = torch.randn(5, 4), torch.randn(5, 4)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0))
    torch.testing.assert_close(kl_per_dim(mu, logvar), expected)
    assert kl_per_dim(torch.zeros(3, 2), torch.zeros(3, 2)).abs().max() == 0


def test_total_correlation_is_small_for_independent_codes():
    torch.manual_seed(0)
    n, d = 512, 3
    mu = torch.randn(n, d)
    logvar = torch.full((n, d), -4.0)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    independent = total_correlation(z, mu, logvar, dataset_size=n).item()
    mu_dep = mu.clone()
    mu_dep[:, 1] = mu_dep[:, 0]  # two copies of one factor: strongly dependent
    z_dep = mu_dep + torch.randn_like(mu) * (0.5 * logvar).exp()
    dependent = total_correlation(z_dep, mu_dep, logvar, dataset_size=n).item()
    assert dependent > independent + 1.0


def test_vae_loss_is_recon_plus_beta_kl(vae, sprites):
    torch.manual_seed(1)
    out = vae_loss(vae, sprites.images, beta=4.0)
    torch.testing.assert_close(out["loss"], out["recon"] + 4.0 * out["kl"])
    assert out["recon"] > 0 and out["kl"] >= 0


def test_fit_vae_is_deterministic_and_learns():
    def run():
        torch.manual_seed(0)
        model = SpritesVAE()
        history = vm.train.fit_vae(model, steps=12, batch_size=16, seed=0, progress=False)
        return model, history
    (a, ha), (b, hb) = run(), run()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert ha == hb
    assert np.mean([h["recon"] for h in ha[-3:]]) < ha[0]["recon"] * 0.9


# ---------------------------------------------------------------------------- disentanglement


def _grid_factors(n=4000, seed=0):
    return vm.data.make_sprites(n, seed=seed).factors


def test_perfect_code_scores_one():
    f = _grid_factors()
    noise = torch.randn(len(f), 1, generator=torch.Generator().manual_seed(0))
    mu = torch.cat([f, noise], 1)  # one latent per factor, plus a nuisance
    corr = vm.disentangle.factor_correlation(mu, f)
    np.testing.assert_allclose(np.diag(corr[:5]), 1.0, atol=1e-9)
    gap, per_factor = vm.disentangle.mig(mu, f)
    # shape and scale (3 and 6 values) survive 20 bins whole; orientation (40 values) and
    # position (32) lose what the binning merges, so even a perfect code scores below 1 there
    assert per_factor[:2].min() > 0.99 and per_factor[2:].min() > 0.75


def test_duplicated_code_has_zero_gap():
    f = _grid_factors()
    mu = torch.cat([f[:, 3:4], f[:, 3:4]], 1)  # x position twice
    gap, per_factor = vm.disentangle.mig(mu, f)
    assert per_factor[3] == pytest.approx(0.0, abs=1e-12)


def test_mutual_information_is_bounded_by_entropy():
    f = _grid_factors()
    mu = torch.randn(len(f), 3, generator=torch.Generator().manual_seed(0))
    info = vm.disentangle.mutual_information(torch.cat([mu, f[:, 3:4]], 1), f)
    assert info.min() >= -1e-9
    # noise knows nothing; the plug-in estimate is biased up by about (bins-1)(values-1)/2n
    # (19 x 39 / 8000 = 0.09 nats for orientation's 40 values)
    assert info[:3].max() < 0.15
    assert info[3, 3] > 0.9 * np.log(20)  # x position binned into 20 bins: ~log 20 nats


def test_disentangle_bad_input():
    with pytest.raises(ValueError, match="same n"):
        vm.disentangle.factor_correlation(torch.zeros(5, 2), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="bins"):
        vm.disentangle.mutual_information(torch.randn(5, 2), torch.zeros(5, 1), bins=1)


# ---------------------------------------------------------------------------- factor maps


def test_factor_cam_mu_equals_gradcam_with_a_mu_target(vae, sprites):
    x = sprites.images
    for i in (0, 7):
        expected = vm.explain.gradcam(vae, x, lambda out: out[0][:, i], layer="encoder.3")
        torch.testing.assert_close(
            vm.explain.factor_cam(vae, x, i, statistic="mu", mode="gradcam"), expected)


def test_joint_map_is_the_map_of_the_summed_score(vae, sprites):
    x = sprites.images
    joint = vm.explain.factor_cam(vae, x, [2, 5], statistic="kl", mode="elementwise")
    kl = lambda out: kl_per_dim(*out)[:, 2] + kl_per_dim(*out)[:, 5]  # noqa: E731
    torch.testing.assert_close(joint, vm.explain.layercam(vae, x, kl, layer="encoder.3"))


def test_factor_cam_is_deterministic_and_leaves_the_model_alone(vae, sprites):
    vae.train()
    flags = [p.requires_grad for p in vae.parameters()]
    state = {k: v.clone() for k, v in vae.state_dict().items()}
    a = vm.explain.factor_cam(vae, sprites.images, [0, 1, 2], statistic="kl")
    b = vm.explain.factor_cam(vae, sprites.images, [0, 1, 2], statistic="kl")
    assert torch.equal(a, b)
    assert vae.training and [p.requires_grad for p in vae.parameters()] == flags
    assert all(torch.equal(v, vae.state_dict()[k]) for k, v in state.items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in vae.modules())
    with pytest.raises(ValueError):
        vm.explain.factor_cam(vae, sprites.images, 99)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in vae.modules())
    vae.eval()


def test_factor_cam_of_a_blank_image_has_no_nan(vae):
    for statistic in vm.explain.STATISTICS:
        for mode in vm.explain.MODES:
            maps = vm.explain.factor_cam(vae, torch.zeros(2, 1, 64, 64), [0, 3],
                                         statistic=statistic, mode=mode)
            assert torch.isfinite(maps).all()
            assert torch.isfinite(vm.explain.normalize(maps)).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(dims=10), r"out of range.*10 dimensions, 0 \.\. 9"),
    (dict(dims=[]), "empty"),
    (dict(dims=[1, 1]), "distinct"),
    (dict(dims=0, statistic="logvar"), "unknown statistic 'logvar'; valid: mu, kl"),
    (dict(dims=0, mode="average"), "unknown mode 'average'; valid: gradcam, elementwise"),
    (dict(dims=0, layer="encoder.99"), "encoder.3"),
])
def test_factor_cam_bad_input(vae, sprites, kwargs, message):
    with pytest.raises(ValueError, match=message):
        vm.explain.factor_cam(vae, sprites.images, **kwargs)


def test_factor_cam_needs_an_encoder_output(sprites):
    model = vm.models.shapes_cnn()
    with pytest.raises(ValueError, match=r"returns \(mu, logvar\).*\(2, 6\)"):
        vm.explain.factor_cam(model, vm.data.make_shapes(2).images, 0, layer="features.7")


def test_any_embedding_through_gradcam():
    """The same machinery explains an embedding: the cosine similarity of each image's
    penultimate features to a reference image's."""
    model = vm.models.shapes_cnn().eval()
    embed = torch.nn.Sequential(model.features, model.pool, *list(model.classifier)[:-1])
    x = vm.data.make_shapes(3, seed=1).images
    with torch.no_grad():
        reference = embed(x[:1])
    target = lambda e: torch.nn.functional.cosine_similarity(e, reference)  # noqa: E731
    maps = vm.explain.gradcam(embed, x, target, layer="0.7")  # features.7
    assert maps.shape == (3, 1, 64, 64) and torch.isfinite(maps).all()


# ---------------------------------------------------------------------------- the shipped VAE


def _shipped():
    if "sprites-vae.pt" not in vm.models.read_manifest().get("files", {}):
        pytest.skip("sprites-vae checkpoint not made yet")
    return vm.models.load_pretrained("sprites-vae")


def test_shipped_vae_separates_x_and_y_position():
    vae = _shipped()
    held = vm.data.make_sprites(4000, seed=vm.train.HELDOUT_SEED + 1)
    with torch.no_grad():
        mu, _ = vae(held.images)
    corr = np.abs(vm.disentangle.factor_correlation(mu, held.factors))
    x_dim, y_dim = corr[:, 3].argmax(), corr[:, 4].argmax()
    assert x_dim != y_dim
    assert corr[x_dim, 3] >= 0.9 and corr[y_dim, 4] >= 0.9


# ---------------------------------------------------------------------------- anomalies


@pytest.mark.parametrize("kind", vm.data.ANOMALIES)
def test_anomalies_are_new_pixels_away_from_the_sprite(kind):
    from scipy import ndimage
    clean = vm.data.make_sprites(40, seed=2).images
    dirty, masks = vm.data.add_anomalies(clean, seed=1, kind=kind)
    assert torch.equal(dirty[:, 0] != clean[:, 0], masks)  # the mask is exactly what changed
    assert (masks.flatten(1).sum(1) >= 5).all()
    for k in range(len(clean)):
        near = ndimage.binary_dilation(clean[k, 0].numpy() > 0, iterations=2)
        assert not (near & masks[k].numpy()).any()
    again, _ = vm.data.add_anomalies(clean, seed=1, kind=kind)
    assert torch.equal(again, dirty)


def test_anomalies_bad_input():
    with pytest.raises(ValueError, match="unknown anomaly 'dent'; valid: blob, scratch"):
        vm.data.add_anomalies(torch.zeros(2, 1, 64, 64), kind="dent")
    with pytest.raises(ValueError, match=r"\(n, 1, H, W\)"):
        vm.data.add_anomalies(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="no room"):
        vm.data.add_anomalies(torch.ones(1, 1, 64, 64))

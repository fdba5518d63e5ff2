"""vismap.widgets: the explorers' render functions, headless, and their widgets' controls."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import hook_count  # noqa: E402

import vismap as vm  # noqa: E402
from vismap import widgets as W  # noqa: E402
from vismap.vae import SpritesVAE  # noqa: E402

E = vm.explain
CLASSES = vm.data.SHAPE_CLASSES


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def cnn(pretrained):
    return pretrained("shapes-cnn")


@pytest.fixture(scope="module")
def gap(pretrained):
    return pretrained("shapes-gap")


@pytest.fixture(scope="module")
def scenes():
    return vm.data.make_shapes(4, seed=77)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)  # random weights: the shipped checkpoint is not needed here
    return SpritesVAE().eval()


def values(dropdown):
    """The values a dropdown offers (its options are ``(label, value)`` pairs)."""
    return [value for _, value in dropdown.options]


def drawn(ax):
    """The arrays of an axes' images, in drawing order."""
    return [np.asarray(im.get_array()) for im in ax.get_images()]


def seeded(method):
    """``method`` run with torch's generator seeded with 0, as the explorer runs it."""

    def run(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return method(*args, **kwargs)

    return run


# the explorer's methods, computed here straight from vm.explain (not through the registry)
EXPECTED = {
    "saliency": lambda m, x, t, layer: E.saliency(m, x, t),
    "deconvnet": lambda m, x, t, layer: E.deconvnet(m, x, t),
    "guided_backprop": lambda m, x, t, layer: E.guided_backprop(m, x, t),
    "gradient_x_input": lambda m, x, t, layer: E.gradient_x_input(m, x, t),
    "smoothgrad": seeded(lambda m, x, t, layer: E.smoothgrad(m, x, t, samples=25, sigma=0.15)),
    "integrated_gradients": lambda m, x, t, layer: E.integrated_gradients(m, x, t),
    "lrp": lambda m, x, t, layer: E.lrp(m, x, t, rule="epsilon"),
    "occlusion": lambda m, x, t, layer: E.occlusion(m, x, t),
    "gradcam": lambda m, x, t, layer: E.gradcam(m, x, t, layer=layer),
    "gradcam_pp": lambda m, x, t, layer: E.gradcam_pp(m, x, t, layer=layer),
    "scorecam": lambda m, x, t, layer: E.scorecam(m, x, t, layer=layer),
    "layercam": lambda m, x, t, layer: E.layercam(m, x, t, layer=layer),
    "guided_gradcam": lambda m, x, t, layer: E.guided_gradcam(m, x, t, layer=layer),
}


def test_the_explorer_offers_every_classifier_method_of_the_registry(cnn):
    assert set(W.classifier_methods()) == set(EXPECTED) | {"cam", "rollout", "chefer"}
    assert "factor_cam" not in W.classifier_methods()  # a VAE's: the latent explorer's
    # for a CNN, the methods its needs allow: no attention methods, with the reason
    assert set(W.classifier_methods(cnn)) == set(EXPECTED) | {"cam"}
    with pytest.raises(ValueError, match="'rollout' needs attention modules.*ShapesNet has none"):
        W.render_explorer(cnn, torch.zeros(3, 64, 64), 0, "rollout")


def test_the_explorer_offers_a_vit_its_methods(pretrained):
    vit = pretrained("shapes-vit")
    offered = set(W.classifier_methods(vit))
    assert {"rollout", "chefer", "gradcam", "saliency"} <= offered
    assert not offered & {"deconvnet", "guided_backprop", "guided_gradcam"}  # no nn.ReLU
    r = W.render_explorer(vit, torch.rand(3, 64, 64), 1, "rollout")
    assert r["map"].shape == (1, 1, 64, 64) and r["method"] == "rollout"
    # its blocks are layers to look at, but the last (its patch tokens are never read: zero maps)
    assert W.conv_layers(vit)[-2:] == ["blocks.0", "blocks.1"]
    scene = vm.data.make_shapes(1, seed=5)
    r = W.render_explorer(vit, scene.images[0], int(scene.labels[0]), "Grad-CAM")
    assert r["layer"] == "blocks.1" and float(r["map"].amax()) > 0


@pytest.mark.parametrize("method", list(EXPECTED))
def test_render_explorer_draws_the_methods_map_and_the_score(cnn, scenes, method):
    image, target, layer = scenes.images[1], 2, "features.6"
    r = W.render_explorer(cnn, image, target, method, layer)
    x = image[None]
    maps = EXPECTED[method](cnn, x, target, layer)
    m = maps[0]
    want = (m.abs().amax(0) if m.shape[0] == 3 else m[0]).numpy()  # max_c |M_c| or M
    torch.testing.assert_close(r["map"], maps)
    image_ax, map_ax, overlay_ax = r["axes"]
    np.testing.assert_allclose(drawn(map_ax)[0], want)
    picture, laid_over = drawn(overlay_ax)
    np.testing.assert_allclose(laid_over, want)
    np.testing.assert_allclose(picture, image.permute(1, 2, 0).numpy())
    with torch.no_grad():
        logits = cnn(x)[0]
    assert r["score"] == pytest.approx(logits[target].item(), abs=1e-5)
    assert r["probability"] == pytest.approx(logits.softmax(0)[target].item(), abs=1e-6)
    assert r["predicted"] == int(logits.argmax())
    title = overlay_ax.get_title()
    assert f"score y = {logits[target]:.2f}" in title and f"p = {r['probability']:.1%}" in title
    assert E.METHODS[method].title in title and CLASSES[target] in title
    assert (layer in title) == E.METHODS[method].layered
    assert r["method"] == method
    by_title = W.render_explorer(cnn, image, target, E.METHODS[method].title, layer)
    torch.testing.assert_close(by_title["map"], maps)


def test_render_explorer_cam_on_the_gap_net(gap, scenes):
    assert W.cam_layer(gap) == "features.10"
    r = W.render_explorer(gap, scenes.images[0], "star", "CAM")  # layer: where CAM holds
    want = E.cam(gap, scenes.images[:1], CLASSES.index("star"), layer="features.10")
    np.testing.assert_allclose(drawn(r["axes"][1])[0], want[0, 0].numpy())
    assert r["layer"] == "features.10" and r["target"] == CLASSES.index("star")
    assert drawn(r["axes"][1]) and r["axes"][1].get_images()[0].get_cmap().name == "RdBu_r"


def test_render_explorer_defaults_and_given_axes(cnn, scenes):
    r = W.render_explorer(cnn, scenes.images[:1], "circle", "Grad-CAM")  # (1, 3, 64, 64) too
    assert r["layer"] == W.conv_layers(cnn)[-1] == "features.9"
    assert W.cam_layer(cnn) is None  # a fully connected head: no CAM
    fig, ax = plt.subplots()
    r2 = W.render_explorer(cnn, scenes.images[0], 0, "Grad-CAM", ax=ax)
    assert r2["figure"] is fig and r2["axes"] == [ax]
    np.testing.assert_allclose(drawn(ax)[1], r["shown"])


def test_shown_map_by_hand():
    colour = torch.tensor([[[1.0, -3.0]], [[-2.0, 0.5]], [[0.0, 1.0]]])[None]  # (1, 3, 1, 2)
    np.testing.assert_allclose(W.shown_map(colour), [[2.0, 3.0]])
    one = torch.tensor([[[[-1.0, 4.0]]]])
    np.testing.assert_allclose(W.shown_map(one), [[-1.0, 4.0]])


def test_render_explorer_bad_input(cnn, scenes):
    image = scenes.images[0]
    with pytest.raises(
        ValueError,
        match=r"expected an image of shape \(3, 64, 64\) or "
        r"\(1, 3, 64, 64\), got \(64, 64, 3\).*permute",
    ):
        W.render_explorer(cnn, image.permute(1, 2, 0), 0, "gradient")
    with pytest.raises(ValueError, match=r"got \(3, 32, 32\)"):
        W.render_explorer(cnn, image[:, :32, :32], 0, "gradient")
    with pytest.raises(ValueError, match=r"got \(4, 3, 64, 64\).*images\[i\]"):
        W.render_explorer(cnn, scenes.images, 0, "gradient")
    with pytest.raises(
        ValueError,
        match="unknown method 'grad-cam'; valid names: saliency, "
        "deconvnet, .*gradcam.*titles: gradient, .*Grad-CAM",
    ):
        W.render_explorer(cnn, image, 0, "grad-cam")
    with pytest.raises(ValueError, match="explains a VAE's latent factors.*latent_explorer"):
        W.render_explorer(cnn, image, 0, "factor_cam")
    with pytest.raises(
        ValueError,
        match="unknown layer 'features.99'; .*features.0, features.3, features.6, features.9",
    ):
        W.render_explorer(cnn, image, 0, "Grad-CAM", "features.99")
    with pytest.raises(ValueError, match="unknown target class 'dog'; valid classes: circle"):
        W.render_explorer(cnn, image, "dog", "gradient")
    with pytest.raises(ValueError, match=r"index 0 \.\. 5"):
        W.render_explorer(cnn, image, 6, "gradient")
    with pytest.raises(ValueError, match="CAM needs a network that ends in global average"):
        W.render_explorer(cnn, image, 0, "CAM")


def test_explorer_constructs_with_defaults(cnn):
    w = W.explorer()
    c = w.controls
    assert len(w.scenes) == 16 and c["image"].max == 15
    assert c["model"].value == "shapes-cnn" and c["method"].value == "gradcam"
    assert c["method"].label == "Grad-CAM"
    assert "cam" not in values(c["method"])  # shapes-cnn is not a GAP network
    assert c["layer"].value == "features.9" and not c["layer"].disabled
    held_out = vm.data.make_shapes(16, seed=vm.train.HELDOUT_SEED)
    torch.testing.assert_close(w.scenes[3][0], held_out.images[3])
    assert c["target"].value == int(held_out.labels[0])
    assert w.error is None and w.result["method"] == "gradcam"
    assert isinstance(w, W.widgets.VBox) and w.output in w.children


def test_changing_a_control_updates_the_figure(cnn, scenes):
    w = W.explorer(cnn, scenes.images, scenes.labels)
    c = w.controls
    first = w.result
    c["method"].value = "guided_backprop"
    assert w.result is not first and w.result["method"] == "guided_backprop"
    assert c["layer"].disabled  # fine-grained: no layer
    np.testing.assert_allclose(
        drawn(w.result["axes"][1])[0],
        W.shown_map(E.guided_backprop(cnn, scenes.images[:1], int(scenes.labels[0]))),
    )
    assert not np.allclose(w.result["shown"], first["shown"])

    c["method"].value = "gradcam"
    c["layer"].value = "features.6"
    assert w.result["layer"] == "features.6" and "features.6" in w.result["title"]
    before = w.result["title"]
    c["target"].value = next(
        k
        for k in range(len(CLASSES))  # not image 2's class, a change
        if k not in (c["target"].value, int(scenes.labels[2]))
    )
    assert w.result["title"] != before and CLASSES[c["target"].value] in w.result["title"]

    c["image"].value = 2  # the target follows the new image's class
    assert c["target"].value == int(scenes.labels[2])
    np.testing.assert_allclose(
        drawn(w.result["axes"][0])[0], scenes.images[2].permute(1, 2, 0).numpy()
    )


def test_new_scene_one_and_two_objects(cnn, scenes):
    w = W.explorer(cnn, scenes.images[0])  # one image, no labels: target = the prediction
    with torch.no_grad():
        assert w.controls["target"].value == int(cnn(scenes.images[:1]).argmax())
    w.new_scene()
    assert len(w.scenes) == 2 and w.controls["image"].value == 1
    seed = int(w.scenes[1][1].split("seed ")[1].split(":")[0])
    scene = vm.data.make_shapes(1, seed=seed)
    torch.testing.assert_close(w.scenes[1][0], scene.images[0])
    assert w.controls["target"].value == int(scene.labels[0])
    assert w.result["figure"] is not None and "seed" in w.result["axes"][0].get_title()
    w.controls["two_objects"].value = True
    w.new_scene()
    assert " + " in w.scenes[2][1] and w.controls["image"].value == 2


def test_explorer_with_several_models_offers_cam_on_the_gap_net(cnn, gap, scenes):
    w = W.explorer(images=scenes.images, labels=scenes.labels, models={"cnn": cnn, "gap": gap})
    c = w.controls
    assert c["model"].layout.display != "none" and "cam" not in values(c["method"])
    c["model"].value = "gap"
    assert "cam" in values(c["method"]) and "features.10" in c["layer"].options[-1][1]
    c["method"].value = "cam"
    assert c["layer"].value == "features.10" and w.result["method"] == "cam"
    c["layer"].value = "features.6"  # CAM does not hold here: the message, not a crash
    assert w.result is None and "CAM needs a network" in w.error
    c["model"].value = "cnn"  # no CAM here: back to Grad-CAM
    assert c["method"].value == "gradcam" and w.error is None


@pytest.mark.slow  # every method of the explorer, on its default options
def test_explorer_leaves_the_model_as_it_was(scenes, pretrained):
    model = pretrained("shapes-gap").train()
    flags = [p.requires_grad for p in model.parameters()]
    attributes = set(vars(model))
    w = W.explorer(model, scenes.images[:2])
    for method in values(w.controls["method"]):
        w.controls["method"].value = method
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert set(vars(model)) == attributes
    assert hook_count(model) == 0


def test_explorer_bad_input(cnn, scenes):
    with pytest.raises(
        ValueError,
        match=r"expected images of shape \(n, 3, 64, 64\) or one "
        r"image \(3, 64, 64\), got \(4, 1, 64, 64\)",
    ):
        W.explorer(cnn, scenes.images[:, :1])
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        W.explorer(cnn, scenes.images, scenes.labels[:3])
    with pytest.raises(ValueError, match="either `model` or `models`"):
        W.explorer(cnn, models=["shapes-gap"])
    with pytest.raises(ValueError, match="unknown model 'shapes-vgg'; valid names"):
        W.explorer("shapes-vgg")


# --------------------------------------------------------------------------------------------
# The latent explorer
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sprite():
    return vm.data.make_sprites(1, seed=5).images[0]  # (1, 64, 64)


def test_render_latents_draws_the_decoded_sprite_and_the_factor_map(vae, sprite):
    z = torch.linspace(-2, 2, vae.latents)
    r = W.render_latents(vae, z, sprite, 3)
    with torch.no_grad():
        want_sprite = torch.sigmoid(vae.decode(z[None]))[0, 0].numpy()
        mu, logvar = vae(sprite[None])
    want_map = E.factor_cam(vae, sprite[None], 3)[0, 0].numpy()
    factor_ax, decoded_ax = r["axes"]
    np.testing.assert_allclose(drawn(decoded_ax)[0], want_sprite, atol=1e-6)
    picture, laid_over = drawn(factor_ax)
    np.testing.assert_allclose(picture, sprite[0].numpy())
    np.testing.assert_allclose(laid_over, want_map, atol=1e-6)
    torch.testing.assert_close(r["mu"], mu[0])
    torch.testing.assert_close(r["kl"], vm.vae.kl_per_dim(mu, logvar)[0])
    assert "z_{3}" in factor_ax.get_title() and f"{z[3]:.2f}" in decoded_ax.get_title()
    joint = W.render_latents(vae, z, sprite[None], [0, 3], mode="elementwise")
    np.testing.assert_allclose(
        joint["shown"],
        E.factor_cam(vae, sprite[None], [0, 3], mode="elementwise")[0, 0].numpy(),
        atol=1e-6,
    )


def test_render_latents_bad_input(vae, sprite):
    z = torch.zeros(vae.latents)
    with pytest.raises(
        ValueError,
        match=r"z needs 10 values, shape \(10,\) or \(1, 10\), "
        r"got \(3,\)",
    ):
        W.render_latents(vae, torch.zeros(3), sprite, 0)
    with pytest.raises(
        ValueError,
        match=r"expected an image of shape \(1, 64, 64\) or "
        r"\(1, 1, 64, 64\), got \(3, 64, 64\)",
    ):
        W.render_latents(vae, z, torch.zeros(3, 64, 64), 0)
    with pytest.raises(ValueError, match=r"dim must be a latent dimension 0 \.\. 9"):
        W.render_latents(vae, z, sprite, 10)
    with pytest.raises(ValueError, match="dim must be"):
        W.render_latents(vae, z, sprite, [])
    with pytest.raises(ValueError, match="need an int attribute `latents` and a method `decode"):
        W.render_latents(vm.models.load_pretrained("shapes-cnn"), z, sprite, 0)


def test_latent_explorer_sliders_and_dropdown(vae, sprite):
    w = W.latent_explorer(vae, sprite)
    assert len(w.sliders) == vae.latents and w.error is None
    with torch.no_grad():
        mu = vae(sprite[None])[0][0]
    np.testing.assert_allclose([s.value for s in w.sliders], mu.clamp(-4, 4).numpy(), atol=0.03)

    before = w.result
    w.sliders[4].value = 2.5  # a slider moves z: the decoded sprite changes
    z = torch.tensor([s.value for s in w.sliders])
    with torch.no_grad():
        want = torch.sigmoid(vae.decode(z[None]))[0, 0].numpy()
    np.testing.assert_allclose(drawn(w.result["axes"][1])[0], want, atol=1e-6)
    assert not np.allclose(w.result["sprite"], before["sprite"])

    w.controls["dim"].value = 7  # the dropdown picks the factor map
    assert w.result["dim"] == 7
    np.testing.assert_allclose(
        w.result["shown"], E.factor_cam(vae, sprite[None], 7)[0, 0].numpy(), atol=1e-6
    )

    w.encode()  # back to mu(x)
    np.testing.assert_allclose(w.sliders[4].value, float(mu[4].clamp(-4, 4)), atol=0.03)


def test_latent_explorer_default_image_and_bad_input(vae):
    w = W.latent_explorer(vae)
    torch.testing.assert_close(w.image, vm.data.make_sprites(1, seed=0).images[0])
    with pytest.raises(ValueError, match=r"expected an image of shape \(1, 64, 64\)"):
        W.latent_explorer(vae, torch.zeros(64, 64))
    with pytest.raises(ValueError, match="needs a VAE"):
        W.latent_explorer(vm.models.load_pretrained("shapes-cnn"))

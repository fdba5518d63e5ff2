"""vismap.models and vismap.train: architectures, batch-norm folding, shipped checkpoints."""

import shutil

import pytest
import torch
from conftest import assert_maps_close
from torch import nn

import vismap as vm
from vismap.models import (
    ARCHITECTURES,
    TRANSFORMERS,
    CheckpointError,
    load_pretrained,
    read_manifest,
)

NAMES = list(ARCHITECTURES)
CLASSIFIERS = [*ARCHITECTURES, *TRANSFORMERS]  # every shipped Shapes classifier, the ViT too


@pytest.fixture(scope="module")
def fresh():
    # A seed used neither for training (vismap.train.TRAIN_SEED) nor for the manifest's
    # held-out accuracy (HELDOUT_SEED).
    assert 777 not in (vm.train.TRAIN_SEED, vm.train.HELDOUT_SEED)
    return vm.data.make_shapes(2000, seed=777)


@pytest.fixture(scope="module")
def fresh_shifted(fresh):
    """``fresh``'s images moved half a pixel right and down, once for every model."""
    return vm.train.shift_images(fresh.images, 0.5, 0.5)


@pytest.fixture(scope="module")
def fresh_accuracy(fresh, pretrained):
    """``fresh_accuracy(name)``: the shipped model's accuracy on ``fresh``, measured once per
    module: the manifest's accuracy and the half-pixel shift are both checked against it (2 s
    for the ViT on 2,000 scenes)."""
    measured = {}

    def of(name):
        if name not in measured:
            measured[name] = vm.train.accuracy(pretrained(name), fresh.images, fresh.labels)
        return measured[name]

    return of


@pytest.mark.parametrize("name", NAMES)
def test_architecture_shapes_and_relu_modules(name):
    model = ARCHITECTURES[name]()
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, len(vm.data.SHAPE_CLASSES))
    kinds = {type(m) for m in model.modules()}
    assert nn.ReLU in kinds and nn.BatchNorm2d not in kinds
    assert nn.BatchNorm2d in {type(m) for m in ARCHITECTURES[name](batchnorm=True).modules()}


def test_heads_match_their_papers():
    cnn, gap, allconv = (ARCHITECTURES[n]() for n in NAMES)
    # shapes-cnn: an FC head on flattened 4x4 maps, so CAM does not apply.
    assert isinstance(cnn.pool, nn.MaxPool2d)
    assert [type(m) for m in cnn.classifier if isinstance(m, nn.Linear)] == [nn.Linear] * 2
    # shapes-gap: global average pooling and exactly one linear layer.
    assert isinstance(gap.pool, nn.AdaptiveAvgPool2d)
    assert [type(m) for m in gap.classifier] == [nn.Flatten, nn.Linear]
    assert str(cnn.features) == str(gap.features)
    # shapes-allconv: no pooling layer at all but the final global average; the last layer is
    # a 1x1 convolution to one map per class.
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in allconv.modules())
    last = allconv.features[-1]
    assert isinstance(last, nn.Conv2d) and last.kernel_size == (1, 1)
    assert last.out_channels == len(vm.data.SHAPE_CLASSES)


@pytest.mark.portable
@pytest.mark.parametrize("name", NAMES)
def test_fold_batchnorm_computes_the_same_function(name):
    torch.manual_seed(0)
    net = ARCHITECTURES[name](batchnorm=True)
    for m in net.modules():  # give the batch norms non-trivial statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.eval().double()  # an identity of the mathematics: compared in float64
    x = torch.rand(4, 3, 64, 64, dtype=torch.float64)
    plain = vm.train.fold_batchnorm(net, name)
    assert_maps_close(plain(x), net(x), 1e-12, msg=name)


def test_multilabel_loss_by_hand_and_what_it_pins():
    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    t = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    p = torch.sigmoid(z)
    by_hand = -(t * p.log() + (1 - t) * (1 - p).log()).sum(1).mean()
    torch.testing.assert_close(vm.train.multilabel_loss(z, t), by_hand)
    # The softmax cross-entropy cannot see a shift of every score; the multi-label loss can:
    # it charges the absent classes for it.
    shifted = z + 5.0
    soft = t / t.sum(1, keepdim=True)
    torch.testing.assert_close(
        vm.train.soft_cross_entropy(shifted, soft), vm.train.soft_cross_entropy(z, soft)
    )
    assert vm.train.multilabel_loss(shifted, t) > vm.train.multilabel_loss(z, t) + 4
    assert set(vm.train.LOSSES) == {"cross_entropy", "multilabel"}


def test_mixed_scenes_targets():
    _, soft = vm.train.mixed_scenes(3, 4, seed=5)
    _, multi = vm.train.mixed_scenes(3, 4, seed=5, multilabel=True)
    torch.testing.assert_close(soft.sum(1), torch.ones(7))
    assert multi[:3].sum(1).tolist() == [1, 1, 1] and multi[3:].sum(1).tolist() == [2] * 4
    assert torch.equal(multi > 0, soft > 0)


@pytest.mark.slow
def test_fit_reduces_the_loss_and_is_seeded():
    data = vm.data.make_shapes(256, seed=5)

    def run():
        torch.manual_seed(0)
        net = vm.models.shapes_gap(batchnorm=True)
        return net, vm.train.fit(
            net, data.images, data.labels, steps=40, batch_size=16, progress=False
        )

    net, losses = run()
    assert not net.training
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10
    assert run()[1] == losses  # same seed, same losses
    with pytest.raises(ValueError, match="differ in length"):
        vm.train.fit(net, data.images, data.labels[:5], steps=1)
    with pytest.raises(
        ValueError, match="unknown loss 'hinge'; valid losses: cross_entropy, multilabel"
    ):
        vm.train.fit(net, data.images, data.labels, steps=1, loss="hinge")
    with pytest.raises(ValueError, match=r"multilabel loss needs one 0/1 target per class"):
        vm.train.fit(net, data.images, data.labels, steps=1, loss="multilabel")


@pytest.fixture
def few_heldout_scenes(monkeypatch):
    """The command's held-out measures (accuracy, pairs in the top 2, the half-pixel shift) on
    100 scenes instead of 2,000: the same code on fewer scenes. At 2,000 they are nine tenths of
    a run of three steps, and what the tests of the command check is the files and records it
    writes, not the accuracy of a model trained for three steps."""
    monkeypatch.setattr(vm.train, "HELDOUT_N", 100)


@pytest.mark.slow
@pytest.mark.usefixtures("few_heldout_scenes")
def test_train_command_writes_the_checkpoint_and_its_manifest_entry(tmp_path, monkeypatch, capsys):
    # `python -m vismap.train` end to end, on a recipe shrunk to a few steps (in this process:
    # --jobs 1; side by side the workers would re-import the full recipe)
    small = {**vm.train.RECIPES["shapes-cnn"], "steps": 3, "n_single": 64, "n_pairs": 64}
    monkeypatch.setitem(vm.train.RECIPES, "shapes-cnn", small)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        vm.train.main(["--only", "shapes-cnn", "--out", str(tmp_path), "--jobs", "1"])
        assert torch.get_num_threads() == 1  # the default: one thread, as the shipped files
    finally:
        torch.set_num_threads(threads)
    entry = read_manifest(tmp_path)["files"]["shapes-cnn.pt"]
    assert entry["sha256"] == vm.models.sha256(tmp_path / "shapes-cnn.pt")
    assert entry["command"] == "python -m vismap.train --only shapes-cnn --seed 0"
    assert entry["threads"] == 1 and entry["steps"] == 3
    assert "shapes-cnn: held-out accuracy" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        vm.train.main(["--threads", "0", "--out", str(tmp_path)])
    assert "--threads and --jobs must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("few_heldout_scenes")
def test_train_command_trains_the_vit_by_its_recipe(tmp_path, monkeypatch, capsys):
    small = {**vm.train.RECIPES["shapes-vit"], "steps": 3, "n_single": 64, "n_pairs": 64}
    monkeypatch.setitem(vm.train.RECIPES, "shapes-vit", small)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    vm.train.main(["--only", "shapes-vit", "--out", str(tmp_path), "--jobs", "1"])
    entry = read_manifest(tmp_path)["files"]["shapes-vit.pt"]
    assert entry["sha256"] == vm.models.sha256(tmp_path / "shapes-vit.pt")
    assert entry["command"] == "python -m vismap.train --only shapes-vit --seed 0"
    assert entry["weight_decay"] > 0 and entry["loss"] == "multilabel"
    model = load_pretrained("shapes-vit", folder=tmp_path)
    assert isinstance(model, vm.models.ShapesViT) and not model.training
    assert "shapes-vit: held-out accuracy" in capsys.readouterr().out


def test_fit_checks_weight_decay_and_warmup():
    data = vm.data.make_shapes(8, seed=5)
    net = vm.models.shapes_vit()
    for bad in ({"weight_decay": -0.1}, {"warmup": 0.0}, {"warmup": 1.0}):
        with pytest.raises(ValueError, match="weight_decay must be >= 0 and warmup"):
            vm.train.fit(net, data.images, data.labels, steps=1, progress=False, **bad)


@pytest.mark.slow
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_shipped_checkpoint_reaches_its_manifest_accuracy(name, fresh, pretrained, fresh_accuracy):
    entry = read_manifest()["files"][f"{name}.pt"]
    model = pretrained(name)
    assert not model.training
    assert all(p.requires_grad for p in model.parameters())
    acc = fresh_accuracy(name)
    # two independent sets of 2,000 scenes: their accuracies differ by sampling, with standard
    # error sqrt(2 p (1 - p) / n) (0.003 at p = 0.99, 0.014 at p = 0.72); three of them, or 0.01
    p, n = entry["accuracy"], len(fresh)
    tolerance = max(0.01, 3 * (2 * p * (1 - p) / n) ** 0.5)
    assert abs(acc - entry["accuracy"]) <= tolerance, (acc, entry["accuracy"], tolerance)
    assert entry["bytes"] <= 2_000_000
    assert entry["command"].startswith("python -m vismap.train")


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_accuracy_targets(name):
    entry = read_manifest()["files"][f"{name}.pt"]
    assert entry["n_pairs"] > 0 and "two-object" in entry["trained_on"]
    assert entry["accuracy"] >= 0.97, (name, entry["accuracy"])
    assert entry["pairs_top2"] >= 0.90, (name, entry["pairs_top2"])


# --------------------------------------------------------------------------------------------
# Issue 12: the shipped classifiers see two objects, resist sub-pixel shifts and have clean
# input gradients. Every check uses seeds that neither training (TRAIN_SEED) nor the
# manifest's measures (HELDOUT_SEED) used.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_pairs():
    assert 778 not in (vm.train.TRAIN_SEED, vm.train.HELDOUT_SEED)
    return vm.data.make_shapes(1000, seed=778, objects=2)


@pytest.mark.slow
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_both_objects_of_a_pair_are_the_top_two(name, fresh_pairs, pretrained):
    rate = vm.train.top2_both(pretrained(name), fresh_pairs.images, fresh_pairs.labels)
    assert rate >= 0.90, rate


@pytest.mark.slow
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_half_pixel_shift_costs_at_most_two_points(
    name, fresh, fresh_shifted, pretrained, fresh_accuracy
):
    before = fresh_accuracy(name)
    after = vm.train.accuracy(pretrained(name), fresh_shifted, fresh.labels)
    assert before - after <= 0.02, (before, after)


@pytest.fixture(scope="module")
def pair_maps(pretrained):
    """Grad-CAM of shapes-cnn at its last conv layer (rectified, features.10) for each of the
    two classes of 200 two-object scenes, plain and counterfactual."""
    pairs = vm.data.make_shapes(200, seed=779, objects=2)
    cnn = pretrained("shapes-cnn")
    maps = {
        (j, cf): vm.explain.gradcam(
            cnn, pairs.images, pairs.labels[:, j], layer="features.10", counterfactual=cf
        )
        for j in (0, 1)
        for cf in (False, True)
    }
    return pairs, maps


def _pointing(pairs, maps, counterfactual):
    """Mean pointing-game hit rate into the asked object and into the other one."""
    own = other = 0.0
    for j in (0, 1):
        m = maps[j, counterfactual]
        own += vm.metrics.pointing_game(m, pairs.masks[:, j]).float().mean().item() / 2
        other += vm.metrics.pointing_game(m, pairs.masks[:, 1 - j]).float().mean().item() / 2
    return own, other


def test_gradcam_is_class_discriminative_on_pairs(pair_maps):
    # The course's target. shapes-cnn is trained with one sigmoid per class
    # (vismap.train.multilabel_loss) for 10,000 steps: measured 0.87 / 0.000 on these scenes,
    # 0.86-0.90 (mean 0.88) over ten held-out sets of 200 pairs. The softmax-trained model scored
    # about 0.5 / 0.19; the multi-label one after 5,000 steps 0.835 / 0.002 (0.80-0.85).
    own, other = _pointing(*pair_maps, counterfactual=False)
    assert own >= 0.85 and other <= 0.05, (own, other)


def test_counterfactual_gradcam_points_at_the_other_object(pair_maps):
    own, other = _pointing(*pair_maps, counterfactual=True)
    assert other > own, (own, other)


def _correlation(a, b):
    """Pearson correlation of two batches of maps, per image."""
    a, b = (m.flatten(1) - m.flatten(1).mean(1, keepdim=True) for m in (a, b))
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def test_guided_backprop_separates_the_classes_far_less_than_gradcam(pretrained):
    # Springenberg et al.'s maps for the two classes of a pair stay alike (measured median
    # correlation 0.61 on the multi-label shapes-cnn, 0.97-0.99 on the softmax-trained one),
    # Grad-CAM's do not (-0.12); guided backprop puts about 5x more of its mass on the object
    # that was not asked for (0.10 against 0.02).
    pairs = vm.data.make_shapes(100, seed=780, objects=2)
    cnn = pretrained("shapes-cnn")
    asked = [pairs.labels[:, j] for j in (0, 1)]
    guided = [vm.explain.guided_backprop(cnn, pairs.images, c) for c in asked]
    cams = [vm.explain.gradcam(cnn, pairs.images, c, layer="features.10") for c in asked]
    corr_guided = _correlation(*guided).median()
    corr_cam = _correlation(*cams).median()
    assert corr_guided >= 0.5 and corr_guided - corr_cam >= 0.5, (corr_guided, corr_cam)
    magnitude = [g.abs().amax(1, keepdim=True) for g in guided]
    elsewhere = {
        name: sum(vm.metrics.relevance_mass(m[j], pairs.masks[:, 1 - j]).mean() for j in (0, 1)) / 2
        for name, m in (("guided", magnitude), ("gradcam", cams))
    }
    assert elsewhere["guided"] >= 3 * elsewhere["gradcam"], elsewhere


def test_input_gradient_predicts_a_small_step(pretrained):
    # First-order Taylor: y(x + eps g / |g|) - y(x) = eps |g| up to O(eps^2), unless a max-pool
    # window ties (then autograd's gradient is one piece's, and the prediction misses).
    data = vm.data.make_shapes(32, seed=781)
    cnn = pretrained("shapes-cnn")
    x = data.images.clone().requires_grad_(True)
    score = cnn(x).gather(1, data.labels[:, None])[:, 0]
    (g,) = torch.autograd.grad(score.sum(), x)
    norm = g.flatten(1).norm(dim=1)
    eps = 1e-4
    with torch.no_grad():
        moved = cnn(x + eps * g / norm[:, None, None, None]).gather(1, data.labels[:, None])[:, 0]
    ratio = (moved - score.detach()) / (eps * norm)
    assert ratio.median() >= 0.95, ratio


# --------------------------------------------------------------------------------------------
# The training machinery
# --------------------------------------------------------------------------------------------


def test_mixed_scenes_images_and_targets():
    images, targets = vm.train.mixed_scenes(6, 4, seed=5)
    assert images.shape == (10, 3, 64, 64) and targets.shape == (10, len(vm.data.SHAPE_CLASSES))
    torch.testing.assert_close(targets.sum(1), torch.ones(10))
    single, pairs = vm.data.make_shapes(6, seed=5), vm.data.make_shapes(4, seed=5, objects=2)
    assert torch.equal(images[:6], single.images) and torch.equal(images[6:], pairs.images)
    assert torch.equal(targets[:6].argmax(1), single.labels)
    for k in range(4):
        expected = torch.zeros(len(vm.data.SHAPE_CLASSES))
        expected[pairs.labels[k]] = 0.5
        assert torch.equal(targets[6 + k], expected)


def test_shift_images_by_hand():
    x = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).reshape(2, 1, 4, 5)
    one = vm.train.shift_images(x, 1.0, 0.0)  # right by one pixel; column 0 repeats (border)
    assert torch.equal(one[..., 1:], x[..., :-1]) and torch.equal(one[..., 0], x[..., 0])
    down = vm.train.shift_images(x, 0.0, 2.0)
    torch.testing.assert_close(down[..., 2:, :], x[..., :-2, :])
    half = vm.train.shift_images(x, 0.5, 0.0)  # each pixel the mean of itself and its left
    torch.testing.assert_close(half[..., 1:], (x[..., 1:] + x[..., :-1]) / 2)
    per_image = vm.train.shift_images(x, torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(per_image[0], x[0])
    torch.testing.assert_close(per_image[1], one[1])


def test_top2_both_by_hand():
    scores = torch.tensor([[5.0, 4.0, 0.0], [5.0, 0.0, 4.0], [0.0, 4.0, 5.0]])
    model = nn.Sequential(nn.Flatten(), nn.Identity())
    labels = torch.tensor([[1, 0], [0, 1], [2, 1]])
    assert vm.train.top2_both(model, scores, labels) == pytest.approx(2 / 3)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["cross_entropy", "multilabel"])
def test_fit_with_two_object_targets_and_shifts(loss):
    images, targets = vm.train.mixed_scenes(128, 128, seed=6, multilabel=loss == "multilabel")
    torch.manual_seed(0)
    net = vm.models.shapes_gap(batchnorm=True)
    losses = vm.train.fit(
        net, images, targets, steps=40, batch_size=16, shift=1.0, loss=loss, progress=False
    )
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10


def test_load_pretrained_unknown_name_lists_the_names():
    with pytest.raises(ValueError) as err:
        load_pretrained("nope")
    for name in NAMES:
        assert name in str(err.value)


@pytest.fixture
def copy_of_data(tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(vm.models.data_dir(), folder)
    return folder


def test_truncated_checkpoint_is_named_with_the_fix(copy_of_data):
    path = copy_of_data / "shapes-cnn.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"shapes-cnn\.pt.*make train"):
        load_pretrained("shapes-cnn", folder=copy_of_data)


def test_tampered_checkpoint_is_refused(copy_of_data):
    path = copy_of_data / "shapes-gap.pt"
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"shapes-gap\.pt.*sha256.*make train"):
        load_pretrained("shapes-gap", folder=copy_of_data)


def test_missing_checkpoint_and_manifest(copy_of_data):
    (copy_of_data / "shapes-allconv.pt").unlink()
    with pytest.raises(CheckpointError, match="missing.*make train"):
        load_pretrained("shapes-allconv", folder=copy_of_data)
    (copy_of_data / "MANIFEST.json").unlink()
    with pytest.raises(CheckpointError, match="make train"):
        load_pretrained("shapes-cnn", folder=copy_of_data)


def test_every_data_file_is_in_the_manifest():
    folder = vm.models.data_dir()
    listed = set(read_manifest()["files"])
    present = {p.name for p in folder.iterdir() if p.name != "MANIFEST.json"}
    assert present == listed
    for name, entry in read_manifest()["files"].items():
        assert entry["sha256"] == vm.models.sha256(folder / name)


def test_the_vit_trains_in_a_quarter_of_an_hour():
    entry = read_manifest()["files"]["shapes-vit.pt"]
    assert entry["train_seconds"] <= 900 and entry["threads"] == 1, entry["train_seconds"]
    assert entry["bytes"] < 2_000_000 and entry["command"].endswith("--only shapes-vit --seed 0")

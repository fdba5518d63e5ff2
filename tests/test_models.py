"""vismap.models and vismap.train: architectures, batch-norm folding, shipped checkpoints."""

import shutil

import pytest
import torch
from torch import nn

import vismap as vm
from vismap.models import ARCHITECTURES, CheckpointError, load_pretrained, read_manifest

NAMES = list(ARCHITECTURES)


@pytest.fixture(scope="module")
def fresh():
    # A seed used neither for training (vismap.train.TRAIN_SEED) nor for the manifest's
    # held-out accuracy (HELDOUT_SEED).
    assert 777 not in (vm.train.TRAIN_SEED, vm.train.HELDOUT_SEED)
    return vm.data.make_shapes(2000, seed=777)


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
    net.eval()
    x = torch.rand(4, 3, 64, 64)
    plain = vm.train.fold_batchnorm(net, name)
    torch.testing.assert_close(plain(x), net(x), atol=1e-5, rtol=1e-5)


def test_fit_reduces_the_loss_and_is_seeded():
    data = vm.data.make_shapes(256, seed=5)

    def run():
        torch.manual_seed(0)
        net = vm.models.shapes_gap(batchnorm=True)
        return net, vm.train.fit(net, data.images, data.labels, steps=40, batch_size=16,
                                 progress=False)

    net, losses = run()
    assert not net.training
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10
    assert run()[1] == losses  # same seed, same losses
    with pytest.raises(ValueError, match="differ in length"):
        vm.train.fit(net, data.images, data.labels[:5], steps=1)


@pytest.mark.parametrize("name", NAMES)
def test_shipped_checkpoint_reaches_its_manifest_accuracy(name, fresh):
    entry = read_manifest()["files"][f"{name}.pt"]
    model = load_pretrained(name)
    assert not model.training
    assert all(p.requires_grad for p in model.parameters())
    acc = vm.train.accuracy(model, fresh.images, fresh.labels)
    assert abs(acc - entry["accuracy"]) <= 0.01, (acc, entry["accuracy"])
    assert entry["bytes"] <= 2_000_000
    assert entry["command"].startswith("python -m vismap.train")


def test_accuracy_targets():
    files = read_manifest()["files"]
    acc = {n: files[f"{n}.pt"]["accuracy"] for n in NAMES}
    assert acc["shapes-cnn"] >= 0.97 and acc["shapes-gap"] >= 0.97
    assert acc["shapes-allconv"] >= acc["shapes-cnn"] - 0.02


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

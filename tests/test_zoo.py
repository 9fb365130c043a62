"""Tests for ttakit.zoo: the CIFAR ResNets (and their published weights) and the tutorial CNN."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ttakit.zoo import (
    CIFAR_RESNET_MEAN,
    CIFAR_RESNET_STD,
    cifar_resnet,
    cifar_resnet_preprocess,
    load_cifar_resnet,
    shared_resnet_path,
    train_tutorial_cnn_torch,
    tutorial_cnn_keras,
    tutorial_cnn_torch,
)
from ttakit.errors import ZooError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODELS = SHARED / "models" / "cifar10-resnet"
BATCHES = SHARED / "data" / "cifar10" / "cifar-10-batches-bin"
RESNET20 = MODELS / "resnet20-12fca82f.th"
RESNET32 = MODELS / "resnet32-d509ac18.th"

TUTORIAL_PARAMS = 545_546


def _need_models():
    if not RESNET20.is_file() or not RESNET32.is_file():
        pytest.skip("../shared not found: ResNet tests need ../shared/models/cifar10-resnet (present in CI)")


def _file_state(path: Path) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(autouse=True)
def _no_models_env(monkeypatch):
    monkeypatch.delenv("TTAKIT_MODELS", raising=False)


# ---------------------------------------------------------------------------
# CIFAR ResNet architecture
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "depth, expected",
    [(20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018), (110, 1_727_962)],
)
def test_resnet_parameter_counts(depth, expected):
    model = cifar_resnet(depth)
    assert _n_params(model) == expected
    assert model.depth == depth
    assert all(not any(True for _ in m.parameters(recurse=False))
               for name, m in model.named_modules() if name.endswith("shortcut"))
    if depth <= 32:  # the deep ones are slow on CPU and add nothing here
        with torch.inference_mode():
            assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("path", [RESNET20, RESNET32], ids=["resnet20", "resnet32"])
def test_resnet_matches_published_tensors(path):
    _need_models()
    state = _file_state(path)
    depth = int(path.name[6:8])
    model = cifar_resnet(depth)
    ours = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert set(ours) == set(state)
    assert all(ours[k].shape == state[k].shape for k in state)
    # Every number in the file is one of ours: learnable ones are parameters,
    # the rest are BatchNorm running statistics.
    assert sum(v.numel() for v in ours.values()) == sum(v.numel() for v in state.values())
    learnable = sum(v.numel() for k, v in state.items() if "running_" not in k)
    assert _n_params(model) == learnable


def test_bad_depth():
    for depth in (0, 19, 21, 2):
        with pytest.raises(ZooError, match="6n\\+2"):
            cifar_resnet(depth)


# ---------------------------------------------------------------------------
# Published weights
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet20():
    _need_models()
    return load_cifar_resnet(RESNET20)


def test_resnet20_loads_strictly_in_eval_mode(resnet20):
    assert not resnet20.training
    assert resnet20.depth == 20
    state = _file_state(RESNET20)
    loaded = resnet20.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_resnet20_accuracy_on_500_test_images(resnet20):
    if not (BATCHES / "test_batch.bin").is_file():
        pytest.skip("../shared not found: CIFAR-10 tests need ../shared/data/cifar10 (present in CI)")
    from ttakit.datasets import cifar10

    ds = cifar10(BATCHES)
    images, labels = ds.images[:500], ds.labels[:500]
    x = cifar_resnet_preprocess(images)
    assert x.shape == (500, 3, 32, 32) and x.dtype == torch.float32
    # The same normalisation written out by hand.
    manual = (images.astype(np.float32) / 255 - np.array(CIFAR_RESNET_MEAN, np.float32)) / np.array(
        CIFAR_RESNET_STD, np.float32
    )
    assert np.allclose(x.numpy(), manual.transpose(0, 3, 1, 2), atol=1e-5)
    with torch.inference_mode():
        pred = resnet20(x).argmax(1).numpy()
    acc = float((pred == labels).mean())
    assert 0.74 <= acc <= 0.88, acc  # README: about 81.0% on the full 10,000


def test_resnet32_loads_by_depth_and_root():
    _need_models()
    model = load_cifar_resnet(32, root=MODELS)
    assert model.depth == 32 and not model.training
    assert _n_params(model) == 464_154
    # The models folder's parent works too (a cifar10-resnet/ subfolder is searched).
    assert shared_resnet_path(32, root=MODELS.parent) == RESNET32


def test_shared_resnet_path_uses_env(monkeypatch):
    _need_models()
    monkeypatch.setenv("TTAKIT_MODELS", str(MODELS))
    assert shared_resnet_path(20) == RESNET20
    assert load_cifar_resnet(20).depth == 20


def test_shared_resnet_path_error_names_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("TTAKIT_MODELS", str(tmp_path / "env-models"))
    with pytest.raises(ZooError) as info:
        shared_resnet_path(20, root=tmp_path / "given")
    msg = str(info.value)
    assert str(tmp_path / "given") in msg and str(tmp_path / "env-models") in msg
    assert "TTAKIT_MODELS" in msg and "root=" in msg
    monkeypatch.delenv("TTAKIT_MODELS")
    with pytest.raises(ZooError, match="TTAKIT_MODELS is not set"):
        shared_resnet_path(20)


def test_bare_state_dict_without_prefix(tmp_path):
    _need_models()
    path = tmp_path / "my_weights.pt"
    torch.save(_file_state(RESNET20), path)
    model = load_cifar_resnet(path)  # depth inferred from the blocks
    assert model.depth == 20


def test_misnamed_checkpoint(tmp_path):
    _need_models()
    wrong = tmp_path / "resnet32-00000000.th"
    shutil.copyfile(RESNET20, wrong)
    with pytest.raises(ZooError, match="ResNet-20"):
        load_cifar_resnet(wrong)


def test_unsafe_or_foreign_checkpoints_are_refused(tmp_path):
    pickled = tmp_path / "pickled.th"
    torch.save({"state_dict": {}, "extra": Path("/x")}, pickled)  # not loadable with weights_only
    with pytest.raises(ZooError, match="weights_only"):
        load_cifar_resnet(pickled)
    other = tmp_path / "other.th"
    torch.save({"state_dict": torch.nn.Linear(2, 2).state_dict()}, other)
    with pytest.raises(ZooError, match="CIFAR ResNet"):
        load_cifar_resnet(other)
    with pytest.raises(ZooError, match="does not exist"):
        load_cifar_resnet(tmp_path / "missing.th")


# ---------------------------------------------------------------------------
# Tutorial CNN
# ---------------------------------------------------------------------------


def test_torch_tutorial_cnn():
    torch.manual_seed(0)
    model = tutorial_cnn_torch()
    assert _n_params(model) == TUTORIAL_PARAMS
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 3 and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)
    for layer in (model.conv1, model.conv2, model.fc1):  # he_uniform, zero bias
        limit = math.sqrt(6 / layer.weight[0].numel())
        assert layer.weight.abs().max() <= limit and layer.weight.abs().max() > 0.9 * limit
        assert not layer.bias.any()
    out = model.eval()(torch.rand(5, 3, 32, 32))
    assert out.shape == (5, 10)
    assert torch.allclose(out.sum(1), torch.ones(5), atol=1e-5)
    assert (out >= 0).all()


def test_train_tutorial_cnn_torch_is_seeded():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(66, 32, 32, 3), dtype=np.uint8)  # last batch: 2
    labels = rng.integers(0, 10, size=66)
    weights = []
    for _ in range(2):
        torch.manual_seed(1)
        model = train_tutorial_cnn_torch(tutorial_cnn_torch(), images, labels, epochs=1, batch_size=32,
                                         seed=3, progress=False)
        assert not model.training
        weights.append(model.fc2.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], tutorial_cnn_torch().fc2.weight)


def test_train_tutorial_cnn_learns():
    # Two trivially separable classes: bright vs dark images.
    images = np.zeros((64, 32, 32, 3), dtype=np.uint8)
    images[::2] = 220
    labels = np.tile([1, 0], 32)
    torch.manual_seed(0)
    model = train_tutorial_cnn_torch(tutorial_cnn_torch(), images, labels, epochs=2, batch_size=16,
                                     seed=0, progress=False)
    with torch.inference_mode():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        acc = (model(x).argmax(1).numpy() == labels).mean()
    assert acc == 1.0


@pytest.fixture(scope="module")
def keras_model():
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras  # noqa: F401
    except Exception as exc:  # pragma: no cover - keras is a dev dependency
        pytest.skip(f"keras is not importable ({exc}); the Keras tutorial CNN needs keras>=3")
    return tutorial_cnn_keras(seed=0)


def test_keras_tutorial_cnn(keras_model):
    trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    assert trainable == TUTORIAL_PARAMS
    assert keras_model.count_params() == TUTORIAL_PARAMS + 448  # + BatchNorm moving statistics
    assert tuple(keras_model.input_shape) == (None, 32, 32, 3)
    assert keras_model.optimizer is not None  # compiled


# Keras' own internals trip a NumPy 2 deprecation warning; not ours to fix.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
def test_keras_and_torch_cnns_compute_the_same_function(keras_model):
    """Copy the Keras weights into the torch twin: same probabilities."""
    import keras

    torch_model = tutorial_cnn_torch().eval()
    convs = [l for l in keras_model.layers if isinstance(l, keras.layers.Conv2D)]
    denses = [l for l in keras_model.layers if isinstance(l, keras.layers.Dense)]
    bns = [l for l in keras_model.layers if isinstance(l, keras.layers.BatchNormalization)]
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for k, t in zip(convs, [torch_model.conv1, torch_model.conv2]):
            kernel, bias = (np.asarray(w) for w in k.get_weights())
            t.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1)))
            t.bias.copy_(torch.from_numpy(bias))
        for k, t in zip(denses, [torch_model.fc1, torch_model.fc2]):
            kernel, bias = (np.asarray(w) for w in k.get_weights())
            t.weight.copy_(torch.from_numpy(kernel.T))
            t.bias.copy_(torch.from_numpy(bias))
        for k, t in zip(bns, [torch_model.bn1, torch_model.bn2, torch_model.bn3]):
            # Non-trivial statistics so the BatchNorm mapping is exercised.
            n = t.num_features
            values = [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), rng.uniform(0.5, 2, n)]
            values = [v.astype(np.float32) for v in values]
            k.set_weights(values)
            for buf, v in zip((t.weight, t.bias, t.running_mean, t.running_var), values):
                buf.copy_(torch.from_numpy(v))
    x = rng.random((4, 32, 32, 3), dtype=np.float32)
    expected = np.asarray(keras_model.predict(x, verbose=0))
    with torch.inference_mode():
        got = torch_model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert np.allclose(expected.sum(1), 1, atol=1e-5)
    assert np.allclose(got, expected, atol=1e-5)

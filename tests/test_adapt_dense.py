"""Test-time adaptation of dense models: ``Segmenter(adapt=...)`` (norm, tent,
memo with a per-pixel entropy objective) and ``Detector(adapt="norm")``, on a
small U-Net with batch norm (:class:`ttakit.zoo.unet.UNet`) whose running
statistics are those of a "clean" synthetic stream."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ttakit
from ttakit.adapt import Memo, Norm, Tent
from ttakit.errors import InputError, ModelLoadError, ModelOutputError
from ttakit.zoo.unet import UNet


def clean(n, seed):
    """Smooth greyscale images in [0, 1], (n, 1, 16, 16)."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 1, 4, 4, generator=g), size=(16, 16), mode="bilinear", align_corners=False)


def contrast(x, factor=0.3):
    return 0.5 + (x - 0.5) * factor


@pytest.fixture(scope="module")
def unet():
    """A U-Net whose batch-norm statistics are the exact averages over 10
    batches of clean images (as if trained on them)."""
    torch.manual_seed(0)
    net = UNet(width=4, depth=2)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative averages
    net.train()
    with torch.no_grad():
        for s in range(10):
            net(clean(16, 100 + s))
    return net.eval()


def segmenter(net, adapt, policy="identity + hflip", **kw):
    return ttakit.Segmenter(net, policy, output="logits", adapt=adapt, **kw)


def test_norm_changes_predictions_only_on_a_shifted_stream(unet):
    x = clean(16, 1)
    mode = Norm(min_inputs=8)  # the default shift test, a floor below the stream's 16 images
    for data, moved in ((x, False), (contrast(x), True)):
        plain = segmenter(unet, None).predict_proba(data)
        adapted = segmenter(unet, mode).predict_proba(data)
        if moved:
            assert np.abs(adapted - plain).max() > 0.05
        else:  # the shift test keeps the model's own statistics, exactly
            assert np.array_equal(adapted, plain)


def test_norm_equals_batch_norm_in_training_mode_over_the_stream(unet):
    """Reference: the model with its batch norms in training mode (statistics
    of the batch itself, every layer) run on the whole stream at once, which
    is what norm does with no prior, no guard and one chunk."""
    xs = contrast(clean(12, 2))
    mode = Norm(prior=0, min_inputs=1, shift_threshold=0)
    got = segmenter(unet, mode, policy="identity", batch_size=12).predict_proba(xs)
    ref = copy.deepcopy(unet).train()
    stats = {}  # each batch norm's statistics over the stream, as training mode computes them
    hooks = [m.register_forward_pre_hook(
        lambda m, a: stats.__setitem__(m, (a[0].mean((0, 2, 3)), a[0].var((0, 2, 3), unbiased=False))))
        for m in ref.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        p = torch.sigmoid(ref(xs))
    for h in hooks:
        h.remove()
    assert np.abs(got - torch.cat([1 - p, p], 1).numpy()).max() < 1e-4
    # with hflip, the flipped view is predicted with the same statistics (views never change them)
    ref.eval()
    with torch.no_grad():
        for m, (mean, var) in stats.items():
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
        assert torch.allclose(torch.sigmoid(ref(xs)), p, atol=1e-5)
        q = torch.sigmoid(ref(xs.flip(-1))).flip(-1)
    res = segmenter(unet, mode, batch_size=12).predict_proba(xs)
    want = (torch.cat([1 - p, p], 1) + torch.cat([1 - q, q], 1)).numpy() / 2
    assert np.abs(res - want).max() < 1e-4


EVERY_MODE = [Norm(min_inputs=1), Tent(min_inputs=1, lr=0.05), Tent(min_inputs=1, episodic=True, steps=2),
              Memo(lr=0.5), Memo(stats=True, min_inputs=1)]


@pytest.mark.parametrize("mode", EVERY_MODE, ids=[f"{m.name}-{i}" for i, m in enumerate(EVERY_MODE)])
def test_the_users_segmenter_is_never_changed(unet, mode):
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    res = segmenter(unet, mode, batch_size=8).run(contrast(clean(16, 3)))
    assert np.isfinite(res.probs).all()
    after = unet.state_dict()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert not unet.training and all(p.grad is None for p in unet.parameters())


def test_tent_and_memo_lower_the_per_pixel_entropy(unet):
    xs = contrast(clean(16, 4))
    plain = segmenter(unet, None).run(xs).entropy.mean()
    for mode in (Tent(min_inputs=1, lr=0.05), Memo(lr=0.5)):
        assert segmenter(unet, mode).run(xs).entropy.mean() < plain - 1e-3, mode.name


def test_memo_adapts_each_image_on_its_own_and_calls_are_independent(unet):
    xs = contrast(clean(6, 5))
    seg = segmenter(unet, Memo(lr=0.5), policy="identity + hflip + rot90(1)", batch_size=6)
    together = seg.predict_proba(xs)
    alone = np.concatenate([seg.predict_proba(xs[i:i + 1]) for i in range(3)])
    assert np.allclose(together[:3], alone, atol=1e-5)
    assert np.array_equal(together, seg.predict_proba(xs))


def test_segmenter_refusals(unet):
    with pytest.raises(ModelLoadError, match="needs a PyTorch model"):
        ttakit.Segmenter(lambda a: np.zeros((len(a), 2, *a.shape[-2:])), adapt="norm")
    with pytest.raises(ModelLoadError, match="needs a PyTorch model"):
        ttakit.Segmenter(unet, adapt="norm", runtime="onnx")
    with pytest.raises(InputError, match="two or more distinct views"):
        ttakit.Segmenter(unet, "identity", adapt="memo")
    with pytest.raises(InputError, match="label-map outputs"):
        ttakit.Segmenter(unet, adapt="tent", output="labels", classes=2)

    class Labels(nn.Module):  # returns label maps: norm works, the entropy objectives cannot
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(1)

        def forward(self, x):
            return (self.bn(x)[:, 0] > 0).float()

    x = contrast(clean(4, 6))
    assert ttakit.Segmenter(Labels().eval(), classes=2, adapt=Norm(min_inputs=1)).predict(x).shape == (4, 16, 16)
    with pytest.raises(ModelOutputError, match="label maps have no entropy"):
        ttakit.Segmenter(Labels().eval(), classes=2, adapt=Tent(min_inputs=1)).predict(x)


class BoxNet(nn.Module):
    """A detector with batch norm: one fixed box per image whose score is the
    mean of a normalised feature map."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        with torch.no_grad():
            self.bn.running_mean.fill_(0.1)
            self.bn.running_var.fill_(0.05)

    def forward(self, x):
        s = torch.sigmoid(self.bn(self.conv(x)).mean((1, 2, 3)))
        return [{"boxes": torch.tensor([[2.0, 2.0, 10.0, 12.0]]), "scores": s[i:i + 1],
                 "labels": torch.zeros(1, dtype=torch.long)} for i in range(len(x))]


def test_detector_norm_adapts_and_leaves_the_model_unchanged():
    net = BoxNet().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = contrast(clean(8, 7), 3.0)
    plain = ttakit.Detector(net, "identity + hflip").run(x)
    adapted = ttakit.Detector(net, "identity + hflip", adapt=Norm(min_inputs=1)).run(x)
    assert not np.allclose(np.concatenate(plain.scores), np.concatenate(adapted.scores), atol=1e-3)
    assert all(np.allclose(a, b) for a, b in zip(plain.boxes, adapted.boxes))
    for k, v in net.state_dict().items():
        assert torch.equal(before[k], v), k


def test_detector_refuses_the_entropy_modes_and_non_torch_models():
    net = BoxNet().eval()
    for mode in ("tent", "memo", Tent(lr=0.1)):
        with pytest.raises(InputError, match="no differentiable per-image class distribution"):
            ttakit.Detector(net, "identity + hflip", adapt=mode)
    with pytest.raises(ModelLoadError, match="needs a PyTorch model"):
        ttakit.Detector(lambda a: [([[0, 0, 1, 1]], [1.0], [0])] * len(a), adapt="norm")
    with pytest.raises(InputError, match="adapt must be one of"):
        ttakit.Detector(net, adapt="bn")


def test_the_dense_command_lines_pass_adapt_to_the_task(unet, tmp_path, capsys):
    """``predict --task segment --adapt`` reaches the Segmenter: a TorchScript
    file (the CLI's torch format) gets the error saying why it cannot adapt,
    in flags."""
    from PIL import Image

    from ttakit.interfaces.cli import main

    pt = tmp_path / "unet.pt"
    torch.jit.trace(copy.deepcopy(unet), clean(1, 0)).save(str(pt))
    Image.fromarray((clean(1, 8)[0, 0].numpy() * 255).astype(np.uint8)).save(tmp_path / "a.png")
    base = ["predict", str(pt), str(tmp_path / "a.png"), "--task", "segment", "--mode", "L", "--size", "16",
            "--output-kind", "logits", "--out", str(tmp_path / "out")]
    assert main(base) == 0
    assert main(base + ["--adapt", "norm"]) != 0
    err = capsys.readouterr().err
    assert "--adapt norm needs an eager torch.nn.Module" in err and "TorchScript" in err

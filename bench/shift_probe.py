"""The shift statistic of ``ttakit.adapt`` (mean over batch-norm layers of the
per-channel KL divergence between a stream's statistics and the model's) on
clean, class-sorted and corrupted CIFAR-10 streams, as it grows from 16 to 400
inputs: the numbers behind ``SHIFT_THRESHOLD`` (docs/adaptation.md).

    TTAKIT_DATA=../shared/data/cifar10 TTAKIT_MODELS=../shared/models/cifar10-resnet python bench/shift_probe.py
"""

import copy

import numpy as np
import torch

from ttakit.adapt.stats import StreamStats
from ttakit.datasets import cifar10
from ttakit.models import Normalize
from ttakit.shift import corrupt
from ttakit.zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

CORRUPTED = (("gaussian_noise", 1), ("shot_noise", 1), ("impulse_noise", 1), ("jpeg_compression", 5),
             ("pixelate", 3), ("defocus_blur", 3), ("fog", 1), ("zoom_blur", 1), ("contrast", 1))


def trajectory(model, pre, xs, chunk=16, upto=400):
    m = copy.deepcopy(model)
    stats = StreamStats(m, prior=32, min_inputs=1, threshold=float("inf"))
    out = []
    for s in range(0, upto, chunk):
        t = pre(torch.from_numpy(xs[s:s + chunk]).permute(0, 3, 1, 2).float() / 255)
        with torch.no_grad():
            stats.probe(lambda: m(t), t.shape[0])
        out.append(stats.shift)
    return out


def main():
    torch.set_num_threads(1)
    test = cifar10(None, split="test")
    idx = np.random.default_rng(0).permutation(len(test.labels))[:2000]
    x, y = test.images[idx], test.labels[idx]
    order = np.argsort(y, kind="stable")
    model = load_cifar_resnet(20).eval()
    pre = Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD)
    rows = {"clean": x, "class-sorted": x[order], "class-sorted, 40 a class": x[order[::5]]}
    for name, sev in CORRUPTED:
        rows[f"{name} {sev}"] = corrupt(x[:400], name, sev, seed=1)
    shown = [16, 32, 64, 96, 128, 192, 256, 400]
    print("| stream | " + " | ".join(f"n={n}" for n in shown) + " |")
    print("|---" * (len(shown) + 1) + "|")
    for name, xs in rows.items():
        t = trajectory(model, pre, xs)
        print(f"| {name} | " + " | ".join(f"{t[n // 16 - 1]:.3f}" for n in shown) + " |")


if __name__ == "__main__":
    main()

"""The CIFAR-10 ResNet of He et al. (2016), section 4.2, and its published weights.

Architecture ("Deep Residual Learning for Image Recognition", section 4.2):
a 3x3 convolution with 16 filters, then three stages of ``n`` basic blocks
with 16, 32 and 64 filters (stride 2 at the start of stages 2 and 3), global
average pooling and a linear layer; depth = 6n + 2 (20, 32, 44, 56, 110).
A basic block is conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU.
Shortcuts that change shape are "option A": parameter-free, subsample by 2
in space and zero-pad ``planes // 4`` channels on each side. Convolutions
have no bias; the linear layer has one. Parameter names match the published
checkpoints: ``conv1``, ``bn1``, ``layer{1,2,3}.{i}.conv{1,2}``,
``layer{1,2,3}.{i}.bn{1,2}``, ``linear``.

This module is ttakit's own code. The pretrained weights it loads
(``resnet20-12fca82f.th``, ``resnet32-d509ac18.th``, ...) are not part of
ttakit: they were published by Yerlan Idelbayev
(github.com/akamaster/pytorch_resnet_cifar10) under the BSD 2-Clause licence,
"Copyright (c) 2018, Yerlan Idelbayev. All rights reserved." Redistributions
of those weights must keep that notice.

Inputs: RGB, NCHW, float in [0, 1], normalised with :data:`CIFAR_RESNET_MEAN`
and :data:`CIFAR_RESNET_STD` (see :func:`cifar_resnet_preprocess`).
Outputs: logits.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Mapping, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, ZooError

__all__ = [
    "CIFAR_RESNET_MEAN",
    "CIFAR_RESNET_STD",
    "CifarResNet",
    "cifar_resnet",
    "cifar_resnet_preprocess",
    "load_cifar_resnet",
    "shared_resnet_path",
]

CIFAR_RESNET_MEAN = (0.485, 0.456, 0.406)
CIFAR_RESNET_STD = (0.229, 0.224, 0.225)

PathLike = Union[str, "os.PathLike[str]"]


class _PadShortcut(nn.Module):
    """Option-A shortcut: stride-2 subsampling and zero channel padding."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            if stride != 2 or planes != 2 * in_planes:
                raise ZooError("option-A shortcuts only double the channels with stride 2")
            self.shortcut: nn.Module = _PadShortcut(planes // 4)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet with ``blocks_per_stage`` basic blocks in each of 3 stages."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ZooError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        self.depth = 6 * blocks_per_stage + 2
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks_per_stage, stride=1)
        self.layer2 = self._stage(16, 32, blocks_per_stage, stride=2)
        self.layer3 = self._stage(32, 64, blocks_per_stage, stride=2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = out.mean(dim=(2, 3))
        return self.linear(out)


def cifar_resnet(depth: int = 20, num_classes: int = 10) -> CifarResNet:
    """Build an untrained CIFAR ResNet of the given depth (6n + 2: 20, 32, 44, 56, 110...)."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ZooError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth!r}")
    return CifarResNet((depth - 2) // 6, num_classes=num_classes)


def _search_dirs(root: Optional[PathLike]) -> List[Path]:
    dirs: List[Path] = []
    bases = []
    if root is not None:
        bases.append(Path(os.fspath(root)).expanduser())
    env = os.environ.get("TTAKIT_MODELS")
    if env:
        bases.append(Path(env).expanduser())
    for base in bases:
        dirs += [base, base / "cifar10-resnet"]
    return dirs


def shared_resnet_path(depth: int, root: Optional[PathLike] = None) -> Path:
    """Find the published checkpoint ``resnet{depth}-*.th``.

    Looks in ``root`` and then ``$TTAKIT_MODELS`` (each folder and its
    ``cifar10-resnet/`` subfolder). Raises :class:`ZooError` naming every
    folder looked in when there is no match.
    """
    dirs = _search_dirs(root)
    pattern = re.compile(rf"^resnet{int(depth)}(-[0-9a-fA-F]+)?\.(th|pt|pth)$")
    for d in dirs:
        if d.is_dir():
            hits = sorted(p for p in d.iterdir() if p.is_file() and pattern.match(p.name))
            if hits:
                return hits[0]
    looked = "; ".join(f"{d}/" for d in dirs) or "nowhere (root=None and TTAKIT_MODELS is not set)"
    raise ZooError(
        f"no checkpoint resnet{depth}-*.th found. Looked in: {looked}. "
        "Pass root= (the folder holding the .th files), set TTAKIT_MODELS, or "
        "pass the checkpoint's full path to load_cifar_resnet()."
    )


def _blocks_per_stage(state: Mapping[str, torch.Tensor], path: Path) -> int:
    counts = []
    for stage in (1, 2, 3):
        idx = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        counts.append(max(idx) + 1 if idx else 0)
    if len(set(counts)) != 1 or counts[0] == 0:
        raise ZooError(
            f"{path} does not look like a CIFAR ResNet checkpoint "
            f"(blocks per stage found: {counts})"
        )
    return counts[0]


def load_cifar_resnet(path_or_depth: Union[int, PathLike], root: Optional[PathLike] = None) -> CifarResNet:
    """Load a published CIFAR ResNet checkpoint into an eval-mode model.

    Args:
        path_or_depth: a checkpoint file, or a depth (20, 32, ...) to find
            with :func:`shared_resnet_path` in ``root`` / ``$TTAKIT_MODELS``.
        root: folder searched when a depth is given.

    The file is read with ``torch.load(..., map_location="cpu",
    weights_only=True)`` (no arbitrary pickles). Both a bare state dict and
    a dict holding ``state_dict`` are accepted; ``module.`` prefixes (from
    DataParallel) are stripped; loading is strict. The depth comes from the
    number of blocks in the state dict and must agree with the file name
    (``resnet20-*.th``) when that names one.
    """
    if isinstance(path_or_depth, int):
        path = shared_resnet_path(path_or_depth, root)
    else:
        path = Path(os.fspath(path_or_depth)).expanduser()
    if not path.is_file():
        raise ZooError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise ZooError(f"could not read checkpoint {path} (weights_only=True): {exc}") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ZooError(f"{path} holds no state dict of tensors")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}

    n = _blocks_per_stage(state, path)
    depth = 6 * n + 2
    named = re.match(r"^resnet(\d+)\b", path.name)
    if named and int(named.group(1)) != depth:
        raise ZooError(f"{path.name} names depth {named.group(1)} but its weights are a ResNet-{depth}")
    if "linear.weight" not in state:
        raise ZooError(f"{path} has no linear.weight")
    model = CifarResNet(n, num_classes=int(state["linear.weight"].shape[0]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ZooError(f"{path} does not match a CIFAR ResNet-{depth}: {exc}") from None
    return model.eval()


def cifar_resnet_preprocess(images: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    """NHWC RGB images -> normalised float32 NCHW tensor for the ResNets.

    ``uint8`` images are scaled by 1/255; float images must already be in [0, 1].
    """
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim != 4 or x.shape[-1] != 3:
        raise InputError(f"expected (N, H, W, 3) images, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    elif torch.is_floating_point(x):
        x = x.float()
    else:
        raise InputError(f"expected uint8 or float images, got {x.dtype}")
    mean = torch.tensor(CIFAR_RESNET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_RESNET_STD).view(1, 3, 1, 1)
    return ((x.permute(0, 3, 1, 2) - mean) / std).contiguous()

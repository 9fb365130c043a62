"""``TTAModule``: a classifier with test-time augmentation as one
``nn.Module`` -- the views, the policy's normalisation, the model and the
merge -- that ``torch.jit.script``, ``torch.export`` and
``torch.onnx.export`` accept, and whose output equals
``Classifier(model, policy, ...).predict_proba`` (within float rounding).

    >>> from ttakit.torch import TTAModule
    >>> tta = TTAModule(model, "d4", input_shape=(3, 32, 32))
    >>> probs = tta(images)                 # (N, C) merged probabilities

Inputs are one batch in ``data_layout`` (``"NCHW"`` or ``"NHWC"``) of
shape ``(N, *input_shape)``. With ``input_dtype="float32"`` (default) they
are floats used as given, as ttakit uses float inputs (the views expect
``[0, 1]``; the policy's ``Normalize`` runs after them); with
``input_dtype="uint8"`` they are 0-255 pixels, scaled by 1/255 inside the
module as ttakit scales uint8 inputs. The image size is fixed
(``input_shape``); the batch size is not.

The model must return one tensor ``(N, C)`` of logits or probabilities;
which of the two is decided once, when the module is built: ``output`` if
given, else the policy's own (a tuned policy records it), else read off
the model's outputs on a few seeded random images, by the rule
``Classifier(output="auto")`` applies to the first batch. Views of the
same output size share one forward batch of the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import InputError, ModelLoadError, PolicyError
from ..merge import Mean, Merge, get_merge
from ..models import Normalize
from ..models.base import ModelAdapter
from ..policy import AdaptivePolicy, Policy
from .merge_ops import merge_module
from .view_ops import ViewOps, view_module

LAYOUTS = ("NCHW", "NHWC")
INPUT_DTYPES = ("float32", "uint8")
OUTPUT_KINDS = ("auto", "probs", "logits")
#: rows summing to 1 within this, and no value below -1e-6, read as probabilities (as Classifier's "auto")
PROB_TOLERANCE = 1e-3


class Preprocess(nn.Module):
    """``(x - mean) / std`` per channel (when given), then the model's layout."""

    def __init__(self, mean: Sequence[float] | None, std: Sequence[float] | None, nhwc: bool):
        super().__init__()
        self.normalise = mean is not None
        m = torch.tensor([0.0] if mean is None else list(mean), dtype=torch.float32)
        s = torch.tensor([1.0] if std is None else list(std), dtype=torch.float32)
        self.register_buffer("mean", m.reshape(1, -1, 1, 1))
        self.register_buffer("std", s.reshape(1, -1, 1, 1))
        self.nhwc = bool(nhwc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            x = (x - self.mean) / self.std
        if self.nhwc:
            x = x.permute(0, 2, 3, 1)
        return x


class ViewGroup(nn.Module):
    """Views of one output size, applied to a batch and stacked into one
    forward batch of ``count x N`` inputs."""

    def __init__(self, views: list[ViewOps]):
        super().__init__()
        self.views = nn.ModuleList(views)
        self.count = len(views)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        for v in self.views:
            parts.append(v(x))
        return torch.cat(parts, 0)


class TTAModule(nn.Module):
    """Test-time augmentation of ``model`` under ``policy`` as one module
    (see the module's notes).

    Parameters
    ----------
    model
        A ``torch.nn.Module`` (TorchScript included) returning ``(N, C)``
        scores, or a ttakit adapter of one (``TorchModel``: its module and
        layout are used, not its ``dtype`` or ``channels_last`` options).
    policy
        A spec string, :class:`~ttakit.Policy`, view or list of views. Its
        merge (a tuned temperature or learned weights) and input contract
        (``Normalize``, model layout, output kind) are used.
    input_shape
        One input's shape in ``data_layout``: ``(C, H, W)`` or ``(H, W, C)``.
    merge, output, preprocess, model_layout
        As for :class:`~ttakit.Classifier` (``preprocess`` a
        :class:`~ttakit.Normalize` or None).
    data_layout, input_dtype
        The layout and dtype of the module's input: ``"NCHW"``/``"NHWC"``,
        ``"float32"``/``"uint8"``.

    Notes
    -----
    The module (and so ``model``) is put in eval mode. Raises a
    :class:`~ttakit.PolicyError` naming a view or merge that has no graph
    form, or an adaptive policy.
    """

    def __init__(self, model, policy, *, input_shape: Sequence[int], merge: str | Merge | None = None,
                 data_layout: str = "NCHW", input_dtype: str = "float32", model_layout: str | None = None,
                 output: str = "auto", preprocess: Normalize | None = None):
        super().__init__()
        module = _module(model)
        if model_layout is None and isinstance(model, ModelAdapter):
            model_layout = model.layout
        data_layout = _choice("data_layout", data_layout, LAYOUTS)
        self.uint8 = _choice("input_dtype", input_dtype, INPUT_DTYPES) == "uint8"
        self.nhwc_input = data_layout == "NHWC"
        chw = _chw(input_shape, data_layout)
        pol = _policy(policy)
        contract = pol.inputs
        mean, std = _normalisation(preprocess, contract)
        model_layout = None if model_layout is None else _choice("model_layout", model_layout, LAYOUTS)
        model_layout = _agreed("model_layout", model_layout, contract.model_layout if contract else None, "NCHW")
        output = _agreed("output", None if output == "auto" else _choice("output", output, OUTPUT_KINDS),
                         contract.output if contract else None, "auto")
        merge = (pol.merge or Mean()) if merge is None else get_merge(merge)
        unique = pol.unique()
        groups: dict[tuple, list[int]] = {}
        for i, v in enumerate(unique.views):
            groups.setdefault(tuple(v.output_shape(chw)), []).append(i)
        order = [i for idx in groups.values() for i in idx]
        self.groups = nn.ModuleList([ViewGroup([view_module(unique.views[i], chw) for i in idx])
                                     for idx in groups.values()])
        self.preprocess = Preprocess(mean, std, model_layout == "NHWC")
        self.model = module
        self.eval()
        device = _device(module)
        if device is not None:  # the views' constants beside the model's weights (before the probe runs them)
            self.groups.to(device)
            self.preprocess.to(device)
        if output == "auto":
            output = self._probe_kind(chw)
        self.output_kind = output
        views = [unique.views[i] for i in order]
        self.merge = merge_module(merge, views, [float(unique.weights[i]) for i in order], output)
        self.views_repr = [repr(v) for v in views]
        self.merge_repr = repr(merge)
        if device is not None:
            self.merge.to(device)

    def _probe_kind(self, chw: tuple[int, int, int]) -> str:
        """"probs" or "logits", read off the model's outputs on seeded random images."""
        g = torch.Generator().manual_seed(0)
        x = torch.rand((8, *chw), generator=g)
        device = _device(self.model)
        if device is not None:
            x = x.to(device)
        with torch.no_grad():
            out = self.model(self.preprocess(self.groups[0].views[0](x)))
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise ModelLoadError("TTAModule needs a model returning one tensor of class scores (N, C); got "
                                 + (f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor)
                                    else type(out).__name__))
        looks_probs = bool(out.min() >= -1e-6) and bool((out.sum(-1) - 1).abs().max() <= PROB_TOLERANCE)
        return "probs" if looks_probs else "logits"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uint8:
            x = x.to(torch.float32) / 255.0
        if self.nhwc_input:
            x = x.permute(0, 3, 1, 2)
        n = x.shape[0]
        outs: list[torch.Tensor] = []
        for group in self.groups:
            y = self.model(self.preprocess(group(x)))
            outs.append(y.reshape(group.count, n, -1))
        return self.merge(torch.cat(outs, 0))


def _module(model) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "module", None)  # a TorchModel adapter
    if isinstance(model, ModelAdapter) and isinstance(inner, nn.Module):
        return inner
    raise ModelLoadError(f"export takes a PyTorch model (a torch.nn.Module or TorchScript module); got "
                         f"{type(model).__name__}")


def _policy(policy) -> Policy:
    pol = Policy.coerce(policy)
    if isinstance(pol, AdaptivePolicy):
        raise PolicyError(f"cannot export the adaptive policy {pol.spec!r}: which views run depends on each "
                          "input's predictions; export one of its stages' policies instead")
    return pol


def _choice(name: str, value, choices: Sequence[str]) -> str:
    v = value.upper() if isinstance(value, str) and name.endswith("layout") else value
    if v not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return v


def _chw(input_shape, layout: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        want = "(C, H, W)" if layout == "NCHW" else "(H, W, C)"
        raise InputError(f"input_shape must be one input's shape {want} for data_layout {layout}, "
                         f"got {input_shape!r}")
    return shape if layout == "NCHW" else (shape[2], shape[0], shape[1])


def _normalisation(preprocess, contract):
    """The (mean, std) to apply: ``preprocess``'s, else the policy's (they must agree)."""
    if preprocess is not None and not isinstance(preprocess, Normalize):
        raise InputError(f"export takes preprocess=Normalize(mean, std) or None, got {type(preprocess).__name__}")
    tuned = None if contract is None or contract.mean is None else (contract.mean, contract.std)
    if preprocess is None:
        return tuned if tuned is not None else (None, None)
    given = (preprocess.mean_values, preprocess.std_values)
    if tuned is not None and not (np.allclose(given[0], tuned[0], atol=1e-6)
                                  and np.allclose(given[1], tuned[1], atol=1e-6)):
        raise InputError(f"the policy was tuned with preprocess=Normalize(mean={list(tuned[0])}, "
                         f"std={list(tuned[1])}) but {preprocess!r} was given; leave preprocess unset")
    return given


def _agreed(name: str, given, tuned, default):
    if given is not None and tuned is not None and given != tuned:
        raise InputError(f"the policy was tuned with {name}={tuned!r} but {name}={given!r} was given; pass the "
                         f"same, or leave {name} unset to use the policy's")
    return given if given is not None else tuned if tuned is not None else default


def _device(module: nn.Module) -> torch.device | None:
    first = next(iter(module.parameters()), None)
    if first is None:
        first = next(iter(module.buffers()), None)
    return None if first is None else first.device

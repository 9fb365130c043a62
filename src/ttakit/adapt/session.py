"""One call's adapted model (:class:`AdaptedModel`): a private copy of the
user's torch module that the run loop shows each chunk of inputs before
predicting it (:meth:`AdaptedModel.adapt_to`)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import InputError, ModelLoadError, ModelOutputError
from ..models.torch_model import TorchModel
from .methods import Memo, Norm, Tent
from .stats import StreamStats, batch_norms

#: the layers whose affine parameters Tent adapts
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)

#: images per backward pass of MEMO (times the number of views)
MEMO_ROWS = 256


def check_adaptable(adapter, method) -> None:
    """A clear error unless ``adapter`` is an eager PyTorch model with what ``method`` needs."""
    if not isinstance(adapter, TorchModel) or type(adapter) is not TorchModel:
        what = type(getattr(adapter, "model", adapter)).__name__
        raise ModelLoadError(
            f"adapt={method.name!r} needs a PyTorch model (a torch.nn.Module with batch-norm layers, run with "
            f"runtime='eager'): it changes normalisation statistics and parameters while predicting, which "
            f"ONNX, Keras, scikit-learn and plain-callable models do not expose (got {type(adapter).__name__} "
            f"for {what})")
    if isinstance(adapter.module, torch.jit.ScriptModule):
        raise ModelLoadError(
            f"adapt={method.name!r} needs an eager torch.nn.Module: it watches and sets the batch-norm layers "
            f"with hooks, which a TorchScript model (torch.jit; a .pt/.ts file) does not run; pass the module "
            f"itself from Python, or a zoo: model on the command line")
    if not batch_norms(adapter.module):
        raise ModelLoadError(f"adapt={method.name!r} needs batch-norm layers with running statistics; "
                             f"{type(adapter.module).__name__} has none")


def model_output(y, dims: int | None = 2) -> torch.Tensor:
    """The model's output as a tensor, keeping the graph (dicts give
    ``"logits"``, tuples their first element); ``dims``: the number of
    dimensions it must have (None: any)."""
    if isinstance(y, dict):
        y = y["logits"] if "logits" in y else next(iter(y.values()))
    if isinstance(y, (list, tuple)):
        y = y[0]
    if not isinstance(y, torch.Tensor) or (dims is not None and y.dim() != dims):
        raise ModelOutputError("adaptation needs a model that returns class scores, shape (n, C)")
    return y.float()


def log_probs(out: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of class scores (probabilities as they are, logits by log-softmax)."""
    with torch.no_grad():
        is_probs = bool(out.min() >= 0) and bool(((out.sum(-1) - 1).abs() <= 1e-3).all())
    return out.clamp_min(1e-12).log() if is_probs else torch.log_softmax(out, -1)


def entropy(logp: torch.Tensor) -> torch.Tensor:
    """Per-row entropy of log-probabilities."""
    return -(logp.exp() * logp).sum(-1)


class ClassScores:
    """The entropy objective of a classifier (Tent's and MEMO's loss): the
    model returns class scores ``(n, C)``, the same for every view.

    An objective has two methods. :meth:`scores` turns the model's raw
    output into a tensor ``(n, ...)`` that keeps the graph;
    :meth:`probs` turns the scores of ``view`` (None: the inputs as given)
    into class probabilities on the input's grid, class axis 1, and the
    view's coverage (a boolean ``(H, W)``, or None where it covers
    everything). ``Segmenter`` passes its own (per-pixel class maps, brought
    back through each view); a task without one supports ``norm`` only."""

    def scores(self, raw) -> torch.Tensor:
        return model_output(raw)

    def probs(self, scores: torch.Tensor, view=None, size=None):
        return log_probs(scores).exp(), None


def mean_entropy(parts, eps: float = 1e-12) -> torch.Tensor:
    """Per input, the entropy of the weighted mean of ``parts`` (``(weight,
    probabilities (n, K, ...), coverage or None)``, class axis 1), averaged
    over the positions some part covers (pixels, for dense outputs)."""
    num = den = 0.0
    for w, p, mask in parts:
        m = 1.0 if mask is None else mask.to(p.dtype)
        num = num + w * p * m
        den = den + w * m
    den = torch.as_tensor(den, dtype=num.dtype, device=num.device)
    marginal = num / den.clamp_min(eps)
    h = -(marginal * marginal.clamp_min(eps).log()).sum(1)  # (n, ...)
    if h.dim() == 1:
        return h
    covered = (den > 0).to(h.dtype).expand_as(num[:, 0]) if den.dim() else torch.ones_like(h)
    return (h * covered).flatten(1).sum(1) / covered.flatten(1).sum(1).clamp_min(1)


class AdaptedModel(TorchModel):
    """A :class:`TorchModel` over a deep copy of ``source.module`` that adapts
    itself to the inputs of one call. The user's module is only read (copied);
    one instance serves one call, so concurrent calls never share state."""

    def __init__(self, source: TorchModel, method: Norm | Tent | Memo, views=(), weights=(), objective=None):
        module = copy.deepcopy(source.module)
        module.eval()
        super().__init__(module, dtype=source.dtype, channels_last=source.channels_last, layout=source.layout)
        self.expected_channels = source.expected_channels
        self.expected_size = source.expected_size
        self.method = method
        self.objective = objective if objective is not None else ClassScores()  #: Tent's and MEMO's loss
        use_stats = not isinstance(method, Memo) or method.stats
        self.stats = StreamStats(module, method.prior, method.min_inputs, method.shift_threshold) \
            if use_stats else None
        for p in module.parameters():
            p.requires_grad_(False)
        self.optimizer = None
        if isinstance(method, Tent):
            params = [p for m in module.modules() if isinstance(m, NORM_LAYERS)
                      for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None]
            for p in params:
                p.requires_grad_(True)
            self.optimizer = _optimizer(method.optimizer, params, method.lr)
            self._initial = (copy.deepcopy(module.state_dict()), copy.deepcopy(self.optimizer.state_dict()))
        self.views, self.weights = list(views), [float(w) for w in weights]
        if isinstance(method, Memo):
            if len(self.views) < 2:
                raise InputError("adapt='memo' minimises the entropy of the mean prediction over the policy's "
                                 "views: it needs a policy of two or more distinct views (e.g. 'flips * "
                                 "(identity + shift(dx=[-2, 2]))')")
            self._bns = batch_norms(module)
            self._deltas = None   # per input: [(d_gamma, d_beta) (n, C) per layer]
            self._hooks = [m.register_forward_hook(self._memo_hook(i)) for i, m in enumerate(self._bns)]
        self.last_shift = float("nan")  #: the stream's divergence at the first batch-norm layer
        self.adapted_chunks = 0          #: chunks predicted with adapted statistics or parameters

    # -- the hook the run loop calls ---------------------------------------
    def adapt_to(self, x: torch.Tensor, preprocess=None) -> None:
        """See the chunk ``x`` (prepared, before ``preprocess``) and adapt to it.
        Holds this instance's state: one call at a time (the run loop's)."""
        if isinstance(self.method, Memo):
            self._deltas = None  # the previous chunk's per-input offsets do not apply to this one
        x = torch.nan_to_num(x.detach(), nan=0.0, posinf=0.0, neginf=0.0)
        xin = self.prepare(preprocess(x) if preprocess is not None else x)
        if isinstance(self.method, Tent):
            self._tent(xin, tuple(x.shape[-2:]))
        else:
            if self.stats is not None:
                self._observe(xin)
            if isinstance(self.method, Memo):
                self._memo(x, preprocess)
                self.adapted_chunks += 1
        if self.stats is not None:
            self.last_shift = self.stats.shift

    def _observe(self, xin) -> bool:
        """Probe the chunk; if the stream is shifted, collect its statistics. Whether it is."""
        with torch.inference_mode():
            self.stats.probe(lambda: self.module(xin), xin.shape[0])
            if not self.stats.active:
                return False
            self.stats.begin_collect(xin.shape[0])
            try:
                self.module(xin)
            finally:
                self.stats.end_collect()
        self.adapted_chunks += 1
        return True

    def _tent(self, xin, size):
        m = self.method
        if not self._observe(xin):  # no shift (or too few inputs yet): the model's own parameters
            return
        if m.episodic:
            stats = [(b.running_mean.clone(), b.running_var.clone()) for b in self.stats.layers]
            self.module.load_state_dict(self._initial[0])
            self.optimizer.load_state_dict(self._initial[1])
            with torch.no_grad():
                for b, (mean, var) in zip(self.stats.layers, stats):
                    b.running_mean.copy_(mean)
                    b.running_var.copy_(var)
        for _ in range(m.steps):
            with torch.enable_grad():
                p, mask = self.objective.probs(self.objective.scores(self.module(xin)), None, size)
                loss = mean_entropy([(1.0, p, mask)]).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

    # -- MEMO ---------------------------------------------------------------
    def _memo_hook(self, i: int):
        def hook(module, args, out):
            if self._deltas is None:
                return None
            d_gamma, d_beta = self._deltas[i]
            x = args[0]
            shape = (-1, x.shape[1]) + (1,) * (x.dim() - 2)
            xhat = (x - module.running_mean.view(shape)) / torch.sqrt(module.running_var.view(shape) + module.eps)
            rows = torch.arange(x.shape[0], device=x.device) % d_gamma.shape[0]
            return out + xhat * d_gamma[rows].view(shape) + d_beta[rows].view(shape)

        return hook

    def _memo(self, x, preprocess):
        m = self.method
        n = x.shape[0]
        size = tuple(x.shape[-2:])
        per = max(1, MEMO_ROWS // len(self.views))
        total = sum(self.weights)
        groups: dict[tuple, list[int]] = {}  # views of one output shape share a forward
        for i, v in enumerate(self.views):
            groups.setdefault(tuple(v.output_shape(tuple(x.shape[1:]))), []).append(i)
        parts = []
        for s in range(0, n, per):
            xs = x[s:s + per]
            g = xs.shape[0]
            deltas = [(torch.zeros(g, b.num_features, device=x.device, requires_grad=True),
                       torch.zeros(g, b.num_features, device=x.device, requires_grad=True)) for b in self._bns]
            opt = _optimizer(m.optimizer, [t for pair in deltas for t in pair], m.lr)
            for _ in range(m.steps):
                self._deltas = deltas
                try:
                    with torch.enable_grad():
                        terms = []
                        for idx in groups.values():
                            batch = torch.cat([self.views[i].apply(xs) for i in idx])
                            batch = self.prepare(preprocess(batch) if preprocess is not None else batch)
                            out = self.objective.scores(self.module(batch))
                            for j, i in enumerate(idx):
                                p, mask = self.objective.probs(out[j * g:(j + 1) * g], self.views[i], size)
                                terms.append((self.weights[i] / total, p, mask))
                        loss = mean_entropy(terms).sum()  # each input's own gradient
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                finally:
                    self._deltas = None
            parts.append([(dg.detach(), db.detach()) for dg, db in deltas])
        self._deltas = [(torch.cat([p[i][0] for p in parts]), torch.cat([p[i][1] for p in parts]))
                        for i in range(len(self._bns))]

    def forward_raw(self, x: torch.Tensor):
        if isinstance(self.method, Memo) and self._deltas is not None and x.shape[0] % self._deltas[0][0].shape[0]:
            raise InputError("internal: a MEMO forward batch is not a whole number of views of the chunk")
        return super().forward_raw(x)


def _optimizer(name: str, params, lr: float):
    return torch.optim.Adam(params, lr=lr) if name == "adam" else torch.optim.SGD(params, lr=lr)

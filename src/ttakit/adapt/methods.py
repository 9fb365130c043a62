"""The adaptation methods as settings: :class:`Norm`, :class:`Tent` and
:class:`Memo` (what ``Classifier(adapt=...)`` takes, besides their names)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ..errors import InputError

#: the shift (mean over batch-norm layers of the per-channel KL divergence
#: between the stream's statistics and the model's, measured with the
#: model's own statistics) above which a stream counts as shifted. Chosen on
#: the zoo ResNet-20 and CIFAR-10 (docs/adaptation.md): random clean streams
#: measure about 0.025, streams of one class only (a class-sorted stream's
#: start) up to about 0.063 (bench/shift_probe.py), which adaptation must not be fooled by; noise,
#: blur, contrast and fog from severity 2-3 on, and pixelate at 5, are above.
#: Another model may need another value (``Norm(shift_threshold=...)``).
SHIFT_THRESHOLD = 0.065


@dataclass(frozen=True)
class Norm:
    """Normalisation statistics from the test stream (Schneider et al. 2020).

    Every batch-norm layer normalises with ``(N m_s + n m_t) / (N + n)``
    (and likewise the variance), where ``m_s`` is the model's own running
    statistic, ``m_t`` the statistic of the ``n`` inputs of the call seen so
    far (each chunk of ``batch_size`` inputs first updates the estimate, then
    is predicted with it) and ``N = prior`` the weight of the model's own, in
    inputs. Views never change the statistics: they are estimated once per
    chunk on the inputs as given.

    Guard: until ``min_inputs`` inputs have been seen, and while the
    divergence between the stream's and the model's statistics at the first
    batch-norm layer stays under ``shift_threshold``, the model's own
    statistics are used unchanged (no shift: nothing to adapt to)."""

    prior: float = 32.0
    min_inputs: int = 64
    shift_threshold: float = SHIFT_THRESHOLD

    name = "norm"

    def __post_init__(self):
        _check_number("prior", self.prior, 0)
        _check_number("shift_threshold", self.shift_threshold, 0)
        _check_int("min_inputs", self.min_inputs, 1)

    def to_dict(self) -> dict:
        return {"method": self.name, **asdict(self)}


@dataclass(frozen=True)
class Tent(Norm):
    """Tent (Wang et al., ICLR 2021): on top of :class:`Norm`'s statistics,
    ``steps`` optimizer steps per chunk (``"adam"`` or ``"sgd"``, learning
    rate ``lr``) on the affine parameters of the normalisation layers,
    minimising the mean entropy of the chunk's predictions (on the inputs as
    given). Online over the call's stream; ``episodic=True`` starts every
    chunk from the model's own parameters. The statistics are constants in
    the gradient. The chunk is then predicted, with the policy's views, by
    the updated model. Guarded like :class:`Norm`: no step while the stream
    counts as unshifted."""

    lr: float = 1e-3
    steps: int = 1
    optimizer: str = "adam"
    episodic: bool = False

    name = "tent"

    def __post_init__(self):
        super().__post_init__()
        _check_number("lr", self.lr, 0)
        _check_int("steps", self.steps, 1)
        if self.optimizer not in ("adam", "sgd"):
            raise InputError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")


@dataclass(frozen=True)
class Memo:
    """MEMO (Zhang et al., NeurIPS 2022): for each input on its own, ``steps``
    optimizer steps on the batch-norm affine parameters minimising the
    entropy of the mean prediction over the policy's own views, from the
    model's parameters every time; then that input is predicted with the
    views by its adapted model. Needs a policy of two or more distinct
    views. ``stats=True`` also uses :class:`Norm`'s stream statistics."""

    lr: float = 0.005
    steps: int = 1
    optimizer: str = "sgd"
    stats: bool = False
    prior: float = 32.0
    min_inputs: int = 64
    shift_threshold: float = SHIFT_THRESHOLD

    name = "memo"

    def __post_init__(self):
        _check_number("lr", self.lr, 0)
        _check_int("steps", self.steps, 1)
        _check_number("prior", self.prior, 0)
        _check_int("min_inputs", self.min_inputs, 1)
        if self.optimizer not in ("adam", "sgd"):
            raise InputError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")

    def to_dict(self) -> dict:
        return {"method": self.name, **asdict(self)}


def may_adapt(method, n_inputs: int | None) -> bool:
    """Whether a call of ``n_inputs`` inputs (None: not known in advance)
    can adapt at all. :class:`Norm` and :class:`Tent` keep the model exactly
    as it is below their floor of ``min_inputs``, so a shorter call runs the
    model itself (the same predictions, without the copy and the probing
    forwards); MEMO adapts every input."""
    return isinstance(method, Memo) or n_inputs is None or n_inputs >= method.min_inputs


METHODS = {"norm": Norm, "tent": Tent, "memo": Memo}
Adaptation = Norm | Tent | Memo


def coerce(adapt) -> Norm | Tent | Memo | None:
    """``None``/``"none"`` (no adaptation), a method name, or a settings object."""
    if adapt is None or adapt == "none":
        return None
    if isinstance(adapt, (Norm, Memo)):
        return adapt
    if isinstance(adapt, str) and adapt in METHODS:
        return METHODS[adapt]()
    if isinstance(adapt, dict) and adapt.get("method") in METHODS:
        opts = {k: v for k, v in adapt.items() if k != "method"}
        try:
            return replace(METHODS[adapt["method"]](), **opts)
        except TypeError as e:
            raise InputError(f"bad adaptation options {opts!r}: {e}") from None
    raise InputError(f"adapt must be one of none, {', '.join(METHODS)} (or ttakit.adapt.Norm/Tent/Memo), "
                     f"got {adapt!r}")


def _check_number(name, v, low):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= low:
        raise InputError(f"{name} must be a number >= {low}, got {v!r}")


def _check_int(name, v, low):
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise InputError(f"{name} must be an integer >= {low}, got {v!r}")

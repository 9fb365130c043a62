"""Test-time augmentation for scikit-learn models of tabular rows.

    clf = ttakit.sklearn.TTAClassifier(HistGradientBoostingClassifier(), random_state=0).fit(X, y)
    clf.predict_proba(X_test)      # the mean of the probabilities over augmented copies
    clf.fell_back_, clf.policy_    # whether TTA helped on held-out rows, and which views
    clf.save_policy("policy.json") # the views and feature statistics, for ttakit evaluate/predict --policy

:class:`TTAClassifier` and :class:`TTARegressor` are meta-estimators in the
style of ``CalibratedClassifierCV``. ``fit``:

1. learns the feature statistics (:class:`~ttakit.views.rows.FeatureStats`:
   column roles inferred or given by ``roles``, robust spread, range, category
   frequencies) from ``X``;
2. with ``holdout="crossfit"`` (the default), cuts the rows into 5 folds
   (stratified for classifiers) and fits a clone of ``estimator`` on every
   four of them, so each row is predicted by a clone that never saw it and
   every row is a tuning row; with a fraction, fits one clone on ``1 -
   holdout`` of the rows and tunes on the rest; with ``prefit=True`` uses
   ``estimator`` as it is (then every row of ``X`` is a tuning row);
3. runs every candidate (each view family of ``views`` at each ``strength``,
   ``n_copies`` seeded copies averaged) on the tuning rows, and keeps the
   result of a guarded greedy search (:func:`ttakit.tuning.rows.guarded_greedy`:
   log-loss for classifiers, squared error for regressors); views are kept
   only when the cross-fitted evidence passes the guard's fixed-sequence test
   at ``guard_alpha`` (as for images, :mod:`ttakit.tuning.guard`); otherwise
   it falls back to no TTA (``fell_back_``);
4. refits the clone on all the rows (``refit=True``, the default).

Predicting runs the kept views through the one run loop
(:func:`ttakit.engine.run`) with :class:`~ttakit.inputs.rows.RowInputs`: every
copy of a chunk of rows goes to the estimator in **one** call (a batch of
``copies x chunk_rows`` rows). Probabilities are averaged (classification
reuses :class:`~ttakit.tasks.classification.ClassificationTask`); regression
merges by mean or median (:class:`~ttakit.tasks.regression.RegressionTask`)
with the spread across copies as an uncertainty
(``predict(X, return_std=True)``). A row's copies depend only on the row
(see :mod:`ttakit.views.rows.views`), so predictions do not depend on batch,
order or subset. ``random_state=None`` means seed 0: predictions are
reproducible unless you ask for other seeds.

A pandas DataFrame keeps its columns and dtypes: it is encoded for the views
and decoded back before the estimator sees it, so a ``Pipeline`` that one-hot
encodes string columns works.
"""

from __future__ import annotations

import numbers

import numpy as np

from .errors import InputError, require

require("sklearn", "sklearn", "ttakit.sklearn")  # one error naming the extra, not a bare ModuleNotFoundError
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, RegressorMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d, validate_data

from .merge import Mean
from .policy import Policy
from .policy.rows import RowPolicy, save_row_policy
from .tasks.classification import ClassificationTask
from .tasks.linear_rows import shortcut_proba
from .tasks.regression import RegressionTask
from .tasks.rows import MODEL_ROWS, direct_output, is_plain, run_rows
from .tuning.guard import GUARD_ALPHA, GUARD_FOLDS, check_guard_alpha, crossfit_folds
from .tuning.rows import auto_families, guarded_greedy, log_loss, split, squared_error
from .views import identity
from .views.rows import DEFAULT_STRENGTHS, FeatureStats, copies, family, is_dataframe

#: fewer held-out rows than this: no tuning, no TTA
MIN_TUNING_ROWS = 20

__all__ = ["TTAClassifier", "TTARegressor", "MODEL_ROWS", "MIN_TUNING_ROWS"]


def _take(x, idx):
    return x.iloc[idx] if is_dataframe(x) else x[idx]


class TTABase(MetaEstimatorMixin, BaseEstimator):
    """Shared by :class:`TTAClassifier` and :class:`TTARegressor` (see the module doc)."""

    def __init__(self, estimator=None, *, views="auto", n_copies: int = 8, strength="auto", prefit: bool = False,
                 holdout="crossfit", refit: bool = True, budget: int = 3, guard_alpha: float = GUARD_ALPHA,
                 roles=None, nan: str = "raise", chunk_rows: int | None = None, on_error: str = "raise",
                 random_state=None):
        self.estimator = estimator
        self.views = views
        self.n_copies = n_copies
        self.strength = strength
        self.prefit = prefit
        self.holdout = holdout
        self.refit = refit
        self.budget = budget
        self.guard_alpha = guard_alpha
        self.roles = roles
        self.nan = nan
        self.chunk_rows = chunk_rows
        self.on_error = on_error
        self.random_state = random_state

    # -- parameters -----------------------------------------------------------
    def _default_estimator(self):  # pragma: no cover - overridden
        raise InputError("no default estimator")

    def _families(self, stats: FeatureStats) -> list[str]:
        v = self.views
        if v is None or (isinstance(v, str) and v.strip().lower() in ("none", "")):
            return []
        if isinstance(v, str) and v.strip().lower() == "auto":
            return auto_families(stats)
        if isinstance(v, str):
            v = [p for p in v.replace(",", "+").split("+") if p.strip()]
        return [family(name).name for name in v]

    def _strengths(self, name: str) -> tuple[float, ...]:
        s = self.strength
        if isinstance(s, str) and s == "auto":
            return DEFAULT_STRENGTHS[name]
        if isinstance(s, numbers.Real) and not isinstance(s, bool):
            return (float(s),)
        if isinstance(s, dict):
            return tuple(float(x) for x in np.atleast_1d(s.get(name, DEFAULT_STRENGTHS[name])))
        try:
            return tuple(float(x) for x in s)
        except TypeError:
            raise InputError(f"strength must be 'auto', a number, a list or {{family: strengths}}, got {s!r}") from None

    def _check_params(self):
        if isinstance(self.n_copies, bool) or not isinstance(self.n_copies, numbers.Integral) or self.n_copies < 1:
            raise InputError(f"n_copies must be a positive integer, got {self.n_copies!r}")
        if self.holdout != "crossfit" and not (isinstance(self.holdout, numbers.Real) and 0 < self.holdout < 1):
            raise InputError(f"holdout must be 'crossfit' or a fraction in (0, 1), got {self.holdout!r}")
        check_guard_alpha(self.guard_alpha)
        if self.on_error not in ("raise", "mark"):
            raise InputError(f"on_error must be 'raise' or 'mark', got {self.on_error!r}")

    # -- fitting --------------------------------------------------------------
    def _validate(self, X, y=None, reset: bool = True):
        finite = True if (self.nan == "raise" and self.on_error == "raise") else "allow-nan"
        if is_dataframe(X):
            validate_data(self, X, reset=reset, skip_check_array=True)
            if y is None:
                return X, None
            y = column_or_1d(y, warn=True)
            check_consistent_length(X, y)
            return X, y
        if y is None:
            return validate_data(self, X, reset=reset, dtype=np.float64, ensure_all_finite=finite), None
        return validate_data(self, X, y, reset=reset, dtype=np.float64, ensure_all_finite=finite,
                             y_numeric=isinstance(self, RegressorMixin))

    def fit(self, X, y):
        """Fit the estimator (unless ``prefit``), the feature statistics, and
        tune the views on held-out rows."""
        self._check_params()
        if y is None:  # the message scikit-learn's checks expect
            validate_data(self, X, y, reset=True)
        X, y = self._validate(X, y)
        if isinstance(self, ClassifierMixin):
            check_classification_targets(y)
        seed = 0 if self.random_state is None else int(check_random_state(self.random_state).randint(2**31 - 1))
        self.stats_ = FeatureStats(self.roles, nan=self.nan).fit(X)
        base = self.estimator if self.estimator is not None else self._default_estimator()
        n = len(y)
        tune_idx = None
        if self.prefit:
            check_is_fitted(base)
            self.estimator_ = base
            tune_idx = np.arange(n)
        elif self.holdout == "crossfit":
            counts = np.unique(y, return_counts=True)[1] if isinstance(self, ClassifierMixin) else None
            if n >= max(MIN_TUNING_ROWS, 2 * GUARD_FOLDS) and (counts is None or counts.min() >= GUARD_FOLDS):
                tune_idx = np.arange(n)
            first = None
        else:
            n_tune = int(round(n * self.holdout))
            if n_tune >= MIN_TUNING_ROWS and n - n_tune >= 2:
                strata = y if isinstance(self, ClassifierMixin) and np.unique(y, return_counts=True)[1].min() >= 2 \
                    else None
                fit_idx, tune_idx = split(n, self.holdout, seed, strata)
                first = clone(base).fit(_take(X, fit_idx), y[fit_idx])
            else:
                first = None
        families = self._families(self.stats_)
        self.candidates_ = [("identity", 0.0)] + [(f, s) for f in families for s in self._strengths(f)]
        if tune_idx is None or len(self.candidates_) == 1:
            self.search_ = None
            self.fell_back_ = True
            self.reason_ = ("no view family was asked for" if len(self.candidates_) == 1 else
                            f"too few rows to hold out {MIN_TUNING_ROWS} for tuning: using no TTA")
            chosen = []
        elif not self.prefit and self.holdout == "crossfit":
            chosen = self._tune(base, X, y, seed, crossfit=True)
        else:
            model = self.estimator_ if self.prefit else first
            chosen = self._tune(model, _take(X, tune_idx), y[tune_idx], seed)
        if not self.prefit:
            self.estimator_ = clone(base).fit(X, y) if (self.refit or first is None) else first
        self.policy_ = self._policy(chosen, seed)
        self.views_ = self.policy_.views
        self._fitted_extra()
        return self

    def _fitted_extra(self):
        pass

    def _reduce(self, per_view: np.ndarray) -> np.ndarray:
        """A candidate's prediction from its copies' ``(copies, N, ...)``."""
        return per_view.mean(0)

    def _candidate_views(self, k: int, seed: int) -> list:
        name, s = self.candidates_[k]
        if name == "identity":
            return [identity()]
        return copies(name, self.stats_, s, self.n_copies, first_seed=seed + 1000 * k)

    def _tune(self, model, X, y, seed, crossfit: bool = False) -> list[int]:
        groups = [self._candidate_views(k, seed) for k in range(len(self.candidates_))]
        flat = [v for g in groups for v in g]
        if crossfit:
            per_view, target, strata = self._crossfit_outputs(model, X, flat, y, seed)
        else:
            per_view, target, strata = self._tuning_outputs(model, X, flat, y)
        preds, i = [], 0
        for g in groups:
            preds.append(self._reduce(per_view[i:i + len(g)]))
            i += len(g)
        names = [f"{n}({s})" if n != "identity" else n for n, s in self.candidates_]
        self.search_ = guarded_greedy(np.stack(preds), target, self._loss_for(model), budget=self.budget, seed=seed,
                                      guard_alpha=self.guard_alpha, strata=strata, names=names)
        self.fell_back_ = self.search_.fell_back
        self.reason_ = self.search_.reason
        return self.search_.chosen

    def _crossfit_outputs(self, base, X, views, y, seed):
        """Every row's outputs under ``views`` from a clone of ``base`` fitted
        without the row's fold (:data:`~ttakit.tuning.guard.GUARD_FOLDS` folds)."""
        strata = y if isinstance(self, ClassifierMixin) else None
        fold = crossfit_folds(len(y), GUARD_FOLDS, seed + 7, strata)
        per_view = target = None
        for f in range(GUARD_FOLDS):
            held = np.flatnonzero(fold == f)
            fit = np.flatnonzero(fold != f)
            model = clone(base).fit(_take(X, fit), y[fit])
            pv, t, _ = self._tuning_outputs(model, _take(X, held), views, y[held])
            if per_view is None:
                per_view = np.empty((pv.shape[0], len(y)) + pv.shape[2:], dtype=np.float64)
                target = np.empty((len(y),) + np.shape(t)[1:], dtype=np.asarray(t).dtype)
            per_view[:, held] = pv
            target[held] = t
        return per_view, target, (target if strata is not None else None)

    def _policy(self, chosen: list[int], seed: int) -> Policy:
        views, weights = [], []
        for k in chosen:
            g = self._candidate_views(k, seed)
            views += g
            weights += [1.0 / len(g)] * len(g)
        if not views:
            return Policy([identity()])
        return Policy(views, weights).unique()

    # -- predicting -----------------------------------------------------------
    def _run(self, X, method: str, task, views=None, weights=None):
        check_is_fitted(self)
        X, _ = self._validate(X, reset=False)
        rows, decoder = self.stats_.encode(X)
        return self._engine(self.estimator_, rows, decoder, method, task,
                            self.policy_.views if views is None else views,
                            self.policy_.weights if weights is None else weights)

    def _plain(self, X, method: str):
        """The estimator's own ``method`` output on ``X`` when the policy is
        no TTA (the guard fell back): bit for bit, not through the run loop.
        None when the policy has views, or a row is not finite (the loop then
        fails it as ``on_error`` says)."""
        check_is_fitted(self)
        if not is_plain(self.policy_.views):
            return None
        valid, _ = self._validate(X, reset=False)
        rows, decoder = self.stats_.encode(valid)
        return direct_output(getattr(self.estimator_, method), rows, decoder=decoder, nan=self.nan,
                             fill=self.stats_.centre, original=X)

    def _engine(self, model, rows, decoder, method, task, views, weights):
        return run_rows(task, getattr(model, method), rows, views, weights, decoder=decoder, nan=self.nan,
                        fill=self.stats_.centre, chunk_rows=self.chunk_rows)

    # -- saving ---------------------------------------------------------------
    def row_policy(self) -> RowPolicy:
        """The tuned views with the feature statistics they need (what
        :meth:`save_policy` writes)."""
        check_is_fitted(self)
        task = "classification" if isinstance(self, ClassifierMixin) else "regression"
        return RowPolicy(self.policy_, self.stats_, task, getattr(self, "merge", "mean"),
                         f"{type(self).__name__}({type(self.estimator_).__name__})")

    def save_policy(self, path):
        """Write the tuned views and the feature statistics to ``path`` (JSON,
        or YAML for ``.yaml``/``.yml``): with the fitted ``estimator_`` saved
        by skops, ``ttakit evaluate``/``ttakit predict --policy PATH`` give the
        same predictions as this estimator. Returns the path."""
        return save_row_policy(self.row_policy(), path)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.nan == "impute"
        tags.input_tags.sparse = False
        return tags


class TTAClassifier(ClassifierMixin, TTABase):
    """A classifier that averages its probabilities over augmented copies of
    each row, with views tuned (and guarded) on held-out rows.

    Parameters
    ----------
    estimator
        A classifier with ``predict_proba`` (default ``LogisticRegression()``).
    views
        ``"auto"`` (noise, jitter, dropout; categorical resampling when
        there are categorical columns; noise on the numeric and on the
        integer features alone when there are both, so that the search
        chooses a strength per group: :func:`ttakit.tuning.rows.auto_families`),
        ``"none"``, a spec ``"noise+dropout"`` or a list of family names.
    n_copies
        Seeded copies per family and strength.
    strength
        ``"auto"`` (a small grid per family), a number, a list, or ``{family: strengths}``.
    prefit
        Use ``estimator`` as fitted; every row of ``X`` then tunes the views.
    holdout
        ``"crossfit"``: tune on every row, each predicted by a clone fitted
        without its fold (5 clones); or a fraction of rows held out to tune
        the views (when not ``prefit``).
    refit
        Refit the estimator on all rows after tuning.
    budget
        Greedy steps of the search.
    guard_alpha
        Error level of the guard: views are kept only if the cross-fitted
        per-row losses pass its fixed-sequence test (one-sided paired t-tests
        from the longest prefix of the search down) at this level
        (default 0.05, as for images; 1 is the weakest test).
    roles
        Column roles overriding the inferred ones (``{column: role}``).
    nan
        ``"raise"`` or ``"impute"`` (the training median or mode).
    chunk_rows
        Rows per chunk (default: ``MODEL_ROWS // copies``).
    on_error
        ``"raise"`` or ``"mark"`` (failed rows get NaN).
    random_state
        Seeds the split and the views (None means 0).

    Notes
    -----
    Fitted attributes: ``estimator_``, ``classes_``, ``n_features_in_``, ``stats_``,
    ``policy_``, ``views_``, ``fell_back_``, ``reason_``, ``search_``.
    """

    def _default_estimator(self):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression()

    def _fitted_extra(self):
        self.classes_ = self.estimator_.classes_

    def _has_proba(self):
        est = getattr(self, "estimator_", None) or self.estimator or self._default_estimator()
        return hasattr(est, "predict_proba")

    def _tuning_outputs(self, model, X, views, y):
        rows, decoder = self.stats_.encode(X)
        target = np.searchsorted(model.classes_, y)
        if hasattr(model, "predict_proba"):
            task = ClassificationTask(Mean(), output="probs", keep_views=True, on_error=self.on_error,
                                      spread=False)
            res = self._engine(model, rows, decoder, "predict_proba", task, views, [1.0] * len(views))
            return res.view_probs.astype(np.float64), target, target
        res = self._engine(model, rows, decoder, "decision_function", RegressionTask(keep_views=True), views,
                           [1.0] * len(views))
        return res.view_preds, target, target

    def _loss_for(self, model):
        return log_loss if hasattr(model, "predict_proba") else _decision_error

    @available_if(_has_proba)
    def predict_proba(self, X) -> np.ndarray:
        """The weighted mean of the estimator's probabilities over the copies.
        (A ``LogisticRegression`` with noise views takes a shortcut for the
        rows no copy pushes out of the training range: the same result without
        writing the copies, see :mod:`ttakit.tasks.linear_rows`.)"""
        plain = self._plain(X, "predict_proba")
        if plain is not None:
            return plain
        X, _ = self._validate(X, reset=False)
        rows, decoder = self.stats_.encode(X)
        views, weights = self.policy_.views, self.policy_.weights
        task = ClassificationTask(Mean(), output="probs", on_error=self.on_error, spread=False)

        def loop(r, decoder=decoder):
            p = self._engine(self.estimator_, r, decoder, "predict_proba", task, views, weights).probs
            p = p.astype(np.float64)
            return p / p.sum(1, keepdims=True)

        fast = shortcut_proba(self.estimator_, rows, views, weights, loop) if decoder is None else None
        return loop(rows) if fast is None else fast

    @available_if(_has_proba)
    def predict_log_proba(self, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def decision_function(self, X) -> np.ndarray:
        """With ``predict_proba``: the log-odds of the merged probabilities
        (binary) or their logs (multiclass), so it ranks exactly as
        :meth:`predict_proba`; without: the mean of the estimator's decision values."""
        check_is_fitted(self)
        if self._has_proba():
            p = self.predict_proba(X)
            with np.errstate(divide="ignore"):
                logp = np.log(p)
            return logp[:, 1] - logp[:, 0] if p.shape[1] == 2 else logp
        return self._run(X, "decision_function", RegressionTask(on_error=self.on_error)).pred

    def predict(self, X) -> np.ndarray:
        """The class of the highest merged probability (or decision value);
        without TTA (the guard fell back) the estimator's own ``predict``."""
        plain = self._plain(X, "predict")
        if plain is not None:
            return plain
        if self._has_proba():
            return self.classes_[self.predict_proba(X).argmax(1)]
        d = self.decision_function(X)
        return self.classes_[(d > 0).astype(int) if d.ndim == 1 else d.argmax(1)]


def _decision_error(d: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row: 1 where the decision values pick the wrong class, else 0."""
    pred = (d > 0).astype(int) if d.ndim == 1 else d.argmax(1)
    return (pred != y).astype(np.float64)


class TTARegressor(RegressorMixin, TTABase):
    """A regressor that merges its predictions over augmented copies of each
    row (mean or median), with the copies' spread as an uncertainty.

    Same parameters as :class:`TTAClassifier` (default estimator ``Ridge()``),
    plus ``merge``: ``"mean"`` or ``"median"``.
    """

    def __init__(self, estimator=None, *, views="auto", n_copies: int = 8, strength="auto", merge: str = "mean",
                 prefit: bool = False, holdout="crossfit", refit: bool = True, budget: int = 3,
                 guard_alpha: float = GUARD_ALPHA, roles=None, nan: str = "raise", chunk_rows: int | None = None,
                 on_error: str = "raise", random_state=None):
        super().__init__(estimator, views=views, n_copies=n_copies, strength=strength, prefit=prefit,
                         holdout=holdout, refit=refit, budget=budget, guard_alpha=guard_alpha, roles=roles, nan=nan,
                         chunk_rows=chunk_rows, on_error=on_error, random_state=random_state)
        self.merge = merge

    def _default_estimator(self):
        from sklearn.linear_model import Ridge

        return Ridge()

    def _loss_for(self, model):
        return squared_error

    def _reduce(self, per_view: np.ndarray) -> np.ndarray:
        return np.median(per_view, 0) if self.merge == "median" else per_view.mean(0)

    def _tuning_outputs(self, model, X, views, y):
        rows, decoder = self.stats_.encode(X)
        task = RegressionTask(self.merge, keep_views=True, on_error=self.on_error)
        res = self._engine(model, rows, decoder, "predict", task, views, [1.0] * len(views))
        return res.view_preds, np.asarray(y, dtype=np.float64), None

    def predict(self, X, return_std: bool = False):
        """The merged prediction; with ``return_std``, also the weighted
        standard deviation across the copies (0 without TTA: then the
        estimator's own ``predict``)."""
        plain = self._plain(X, "predict")
        if plain is not None:
            return (plain, np.zeros(np.shape(plain))) if return_std else plain
        res = self.predict_dist(X)
        return (res.pred, res.std) if return_std else res.pred

    def predict_dist(self, X):
        """The full :class:`~ttakit.tasks.regression.RegressionResult`
        (``pred``, ``std``, ``interval(level)``, failures)."""
        return self._run(X, "predict", RegressionTask(self.merge, on_error=self.on_error))

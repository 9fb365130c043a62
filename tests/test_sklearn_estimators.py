"""scikit-learn's own estimator checks on TTAClassifier and TTARegressor,
and the meta-estimators inside Pipeline, GridSearchCV, clone and cross_val_score."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from ttakit.sklearn import TTAClassifier, TTARegressor

pytestmark = pytest.mark.xdist_group("sklearn")


@parametrize_with_checks([TTAClassifier(LogisticRegression(), n_copies=2, strength=0.1, random_state=0),
                          TTARegressor(Ridge(), n_copies=2, strength=0.1, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _data(kind):
    if kind == "clf":
        x, y = load_breast_cancer(return_X_y=True)
        return x[:300], y[:300]
    x, y = load_diabetes(return_X_y=True)
    return x[:300], y[:300]


def test_pipeline_clone_and_cross_val_score():
    x, y = _data("clf")
    pipe = make_pipeline(StandardScaler(), TTAClassifier(LogisticRegression(), n_copies=2, strength=0.1,
                                                         random_state=0))
    scores = cross_val_score(pipe, x, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85
    c = clone(pipe)
    assert c.get_params()["ttaclassifier__n_copies"] == 2
    assert not hasattr(c[-1], "policy_")


def test_grid_search_over_tta_and_estimator_parameters():
    x, y = _data("reg")
    grid = GridSearchCV(TTARegressor(Ridge(), n_copies=2, random_state=0),
                        {"strength": [0.05, 0.2], "estimator__alpha": [0.1, 1.0]}, cv=2)
    grid.fit(x, y)
    assert set(grid.best_params_) == {"strength", "estimator__alpha"}
    assert grid.predict(x[:5]).shape == (5,)

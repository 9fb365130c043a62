"""Tests for ttakit.register_view: a user's view works in specs, the
Classifier, policy files and ``ttakit views``, like a built-in one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ttakit
from ttakit.errors import PolicyError
from ttakit.interfaces import cli
from ttakit.views import View, registry


class Invert(View):
    """Blend the image with its negative: ``(1 - amount) x + amount (1 - x)``."""

    name = "invert"

    def __init__(self, amount: float = 0.5):
        self.amount = float(amount)

    def params(self):
        return {"amount": self.amount}

    def apply(self, x):
        return x * (1 - self.amount) + (1 - x) * self.amount


@pytest.fixture
def invert():
    """``invert`` registered for one test; the tables are restored after."""
    views, groups = dict(registry.VIEWS), dict(registry.GROUPS)
    ttakit.register_view("invert", Invert, "blend with the negative")
    yield
    registry.VIEWS.clear()
    registry.VIEWS.update(views)
    registry.GROUPS.clear()
    registry.GROUPS.update(groups)


def test_spec_parses_and_dedupes_a_registered_view(invert):
    pol = ttakit.Policy.parse("identity + invert(0.5) + invert + invert(0.25, 0.75)")
    assert len(pol) == 5 and pol.views[1] == Invert(0.5) == pol.views[2]
    unique = pol.unique()
    assert [repr(v) for v in unique.views] == ["identity", "invert", "invert(0.25)", "invert(0.75)"]
    np.testing.assert_array_equal(unique.weights, [1, 2, 1, 1])
    with pytest.raises(PolicyError, match="invert has no parameter 'amout'.*Did you mean 'amount'"):
        ttakit.Policy.parse("invert(amout=0.5)")


def test_classifier_runs_a_registered_view(invert):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    x = torch.rand(6, 3, 8, 8)
    res = ttakit.Classifier(net, "identity + invert(0.3) + invert(0.3)").run(x)
    assert res.forward_passes == 2 * len(x)  # the two copies are one forward pass, weight 2
    with torch.no_grad():
        p_id = torch.softmax(net(x), -1)
        p_inv = torch.softmax(net(0.7 * x + 0.3 * (1 - x)), -1)
    np.testing.assert_allclose(res.probs, ((p_id + 2 * p_inv) / 3).numpy(), atol=1e-6)


def test_policy_file_round_trip(invert, tmp_path):
    pol = ttakit.Policy.parse("hflip + 2 * invert(0.25)")
    pol.save(tmp_path / "p.yaml")
    assert "view: invert" in (tmp_path / "p.yaml").read_text()
    back = ttakit.Policy.load(tmp_path / "p.yaml")
    assert back == pol and back.views[1] == Invert(0.25)
    np.testing.assert_array_equal(back.weights, pol.weights)


def test_groups_and_the_views_command(invert, capsys):
    ttakit.register_view("inverts", lambda: [Invert(0.25), Invert(0.75)], "two blends", group=True)
    assert ttakit.Policy.parse("identity + inverts").views[1:] == (Invert(0.25), Invert(0.75))
    assert cli.main(["views"]) == 0
    out = capsys.readouterr().out
    assert "invert(amount=0.5)" in out and "blend with the negative" in out and "two blends" in out
    assert cli.main(["views", "-f", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"name": "invert", "parameters": "(amount=0.5)", "summary": "blend with the negative"} in data["views"]
    assert "inverts" in [g["name"] for g in data["groups"]]


def test_refusals(invert):
    with pytest.raises(PolicyError, match="'hflip' is a built-in view; pass replace=True"):
        ttakit.register_view("hflip", Invert)
    with pytest.raises(PolicyError, match="already registered"):
        ttakit.register_view("invert", Invert)
    for bad in ("my-view", "2x", "", "class", None):
        with pytest.raises(PolicyError, match="identifier"):
            ttakit.register_view(bad, Invert)
    with pytest.raises(PolicyError, match="reserved"):
        ttakit.register_view("random", Invert)
    with pytest.raises(PolicyError, match="must be callable"):
        ttakit.register_view("blend", 3.0)
    with pytest.raises(PolicyError, match=r"register the view's class \(Invert\)"):
        ttakit.register_view("blend", Invert(0.5))
    with pytest.raises(PolicyError, match="Invert.name is 'invert', not 'negative'"):
        ttakit.register_view("negative", Invert)
    assert "negative" not in registry.VIEWS and "blend" not in registry.VIEWS
    # replace=True takes a built-in name, and the default summary is the docstring's first line
    entry = ttakit.register_view("invert", Invert, replace=True)
    assert entry.summary.startswith("Blend the image with its negative")


def test_replace_a_builtin(invert):
    class Hflip(Invert):
        name = "hflip"

    ttakit.register_view("hflip", Hflip, replace=True)
    assert ttakit.Policy.parse("hflip").views[0] == Hflip(0.5)
    ttakit.register_view("d4", lambda: Hflip(0.1), replace=True)  # a group's name, now one view's
    assert "d4" in registry.VIEWS and "d4" not in registry.GROUPS
    assert ttakit.Policy.parse("d4").views == (Hflip(0.1),)

"""The README is code that runs: its quick start on real data and a real model,
its links, the contributor commands CI relies on; the documentation site's
pieces (the docstring roles extension, the nav) are checked here too. The
site itself is built strictly by `make docs`, a prerequisite of `make test`."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED = ROOT.parent / "shared"
QUICK_START_IMAGES = 300


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def _code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S)


def _first_existing(*candidates):
    return next((Path(c) for c in candidates if c and Path(c).exists()), None)


@pytest.mark.slow
def test_readme_quick_start_runs_on_real_data(monkeypatch):
    """The README's quick start block, run as written on the first images of
    the CIFAR-10 test set with the published ResNet-20."""
    data = _first_existing(SHARED / "data" / "cifar10" / "cifar-10-batches-bin", os.environ.get("TTAKIT_DATA"))
    models = _first_existing(SHARED / "models" / "cifar10-resnet", os.environ.get("TTAKIT_MODELS"))
    if data is None or models is None or not list(models.glob("resnet20-*.th")):
        pytest.skip("../shared not found: the README quick start needs ../shared/data/cifar10 and "
                    "../shared/models/cifar10-resnet (or TTAKIT_DATA and TTAKIT_MODELS; present in CI)")
    blocks = _code_blocks(_section(README.read_text(encoding="utf-8"), "Quick start"), "python")
    assert len(blocks) == 1, "the README's quick start should hold exactly one python block"
    code = blocks[0]
    assert len(code.strip().splitlines()) <= 12, "the quick start should stay about ten lines"

    import ttakit.datasets
    from ttakit.datasets import cifar10 as real_cifar10

    def small_cifar10(*args, **kwargs):  # the same data, cut to a slice so the test stays short
        full = real_cifar10(*args, **kwargs)
        return type(full)(images=full.images[:QUICK_START_IMAGES], labels=full.labels[:QUICK_START_IMAGES],
                          classes=full.classes, split=full.split, source=full.source)

    monkeypatch.setattr(ttakit.datasets, "cifar10", small_cifar10)
    monkeypatch.setenv("TTAKIT_DATA", str(data))
    monkeypatch.setenv("TTAKIT_MODELS", str(models))
    namespace: dict = {"__name__": "readme_quick_start"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), namespace)

    probs = namespace["probs"]
    assert probs.shape == (8, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    report = namespace["report"]
    assert report.n == QUICK_START_IMAGES
    # the published ResNet-20 scores about 81% on this copy: a wrong Normalize or layout scores far lower
    assert report.baseline_metrics["accuracy"] > 0.7, report.baseline_metrics
    assert report.policy_metrics["accuracy"] > 0.7, report.policy_metrics
    printed = out.getvalue().strip()
    assert printed == report.verdict()
    assert printed.startswith(("TTA helps", "TTA hurts", "no clear effect"))


def test_readme_keeps_the_contributor_commands_ci_runs():
    text = README.read_text(encoding="utf-8")
    contributors = _section(text, "For contributors")
    commands = "\n".join(_code_blocks(contributors, "sh"))
    assert re.search(r"^make demo\b", commands, flags=re.M) and re.search(r"^make test\b", commands, flags=re.M)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, flags=re.M), "CI runs exactly the README's test command"
    assert "make docs" in text
    install = _section(text, "Install")
    assert 'pip install "ttakit[' in install and "torch" in install and "KERAS_BACKEND=torch" in install


def test_readme_lists_every_extra():
    text = _section(README.read_text(encoding="utf-8"), "Install")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    listed = set(re.findall(r"^\| `([a-z]+)` \|", text, flags=re.M))
    assert listed == set(extras) - {"dev"}, (sorted(listed), sorted(extras))


def test_readme_links_point_at_files():
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "the README links its guides"
    missing = [link for link in local if link and not (ROOT / link).exists()]
    assert not missing, missing


def test_readme_is_short_and_has_no_paste_notes():
    assert len(README.read_text(encoding="utf-8").splitlines()) < 200
    for page in (ROOT / "docs").rglob("*.md"):
        text = page.read_text(encoding="utf-8")
        assert "to paste under" not in text and "README section" not in text, page


def test_license_is_mit():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "the ttakit authors" in text


def test_docstring_roles_become_code_spans():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        griffe_roles = pytest.importorskip("griffe_roles", reason="griffe comes with the docs extra")
    finally:
        sys.path.remove(str(ROOT / "docs"))
    assert griffe_roles.plain_roles("a :class:`~ttakit.Policy` b") == "a `Policy` b"
    assert griffe_roles.plain_roles(":func:`ttakit.tune` and :mod:`ttakit.views`") == "`ttakit.tune` and `ttakit.views`"
    assert griffe_roles.plain_roles(":py:meth:`~ttakit.Classifier.run`") == "`run`"
    assert griffe_roles.plain_roles("``code`` stays") == "``code`` stays"


def test_every_docs_page_is_in_the_site_nav():
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)

    def pages(nav):
        for item in nav:
            if isinstance(item, str):
                yield item
            elif isinstance(item, dict):
                for value in item.values():
                    yield from (pages(value) if isinstance(value, list) else [value])

    in_nav = set(pages(config["nav"]))
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk == in_nav, (sorted(on_disk - in_nav), sorted(in_nav - on_disk))

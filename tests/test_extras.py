"""A missing optional dependency is ONE error naming the extra that brings it
(``pip install 'ttakit[onnx]'``), in Python and on the command line (exit 2),
never a bare ``ModuleNotFoundError`` or an "internal error". Each case runs in
a fresh interpreter with the dependency blocked."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
SHARED = Path(os.environ.get("TTAKIT_SHARED", ROOT.parent / "shared"))
if not (SHARED / "models").exists():
    SHARED = Path("/work/shared")
YOLOX = SHARED / "models" / "yolox-nano" / "yolox_nano.onnx"
RESNETS = SHARED / "models" / "cifar10-resnet"

BLOCK = """import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == {module!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
for m in list(sys.modules):
    if m.split('.')[0] == {module!r}:
        del sys.modules[m]
"""


def blocked(module: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "KERAS_BACKEND": "torch"}
    return subprocess.run([sys.executable, "-c", BLOCK.format(module=module) + code], capture_output=True,
                          text=True, env=env, timeout=300)


PYTHON_CASES = {
    "sklearn": ("sklearn", "import ttakit.sklearn"),
    "keras": ("keras", "from ttakit.models.loading import load_model_file\n"
                       "open('m.keras', 'wb').close()\nload_model_file('m.keras')"),
    "skops": ("skops", "from ttakit.models.sklearn_loading import load_sklearn\n"
                       "open('m.skops', 'wb').close()\nload_sklearn('m.skops')"),
    "pycocotools": ("pycocotools", "from ttakit.evaluation.dense import load_coco_ground_truth\n"
                                   "load_coco_ground_truth({'images': [], 'annotations': [], 'categories': []})"),
    "pandas": ("pandas", "from ttakit.io.tables import read_table\nread_table('t.csv')"),
    "onnxruntime": ("onnxruntime", "import torch\nfrom ttakit import as_model\nfrom ttakit.models.runtime import "
                                   "with_runtime\nwith_runtime(as_model(torch.nn.Conv2d(3, 2, 1)), 'onnx')"),
    "fastapi": ("fastapi", "from ttakit.serve import create_app\ncreate_app(None)"),
    "ray": ("ray", "import ttakit.scale\nttakit.scale.predict_dataset(None, 'model.pt')"),
    "ray.serve": ("ray", "import ttakit.serve.ray_deployment"),
}
EXTRA = {"sklearn": "sklearn", "keras": "keras", "skops": "tables", "pycocotools": "coco", "pandas": "tables",
         "onnxruntime": "onnx", "fastapi": "serve", "ray": "ray", "ray.serve": "ray"}


@pytest.mark.parametrize("case", sorted(PYTHON_CASES))
def test_python_names_the_extra(case, tmp_path):
    module, code = PYTHON_CASES[case]
    wrapped = ("import os\nos.chdir(%r)\n" % str(tmp_path)) + (
        "from ttakit.errors import MissingExtraError\n"
        "try:\n" + "".join(f"    {line}\n" for line in code.splitlines()) +
        "except MissingExtraError as e:\n"
        "    assert isinstance(e, ImportError)\n"
        "    print('MISSING:', e)\n"
        "else:\n"
        "    print('NO ERROR')\n")
    r = blocked(module, wrapped)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "MISSING:" in r.stdout, r.stdout
    assert f"pip install 'ttakit[{EXTRA[case]}]'" in r.stdout
    assert "which is not installed" in r.stdout


@pytest.mark.skipif(not YOLOX.exists(), reason="the shared YOLOX-nano ONNX model (/work/shared/models) is absent")
def test_onnx_without_onnxruntime_python():
    r = blocked("onnxruntime", "from ttakit.errors import MissingExtraError\n"
                               "from ttakit.models.loading import load_model_file\n"
                               f"try:\n    load_model_file({str(YOLOX)!r})\n"
                               "except MissingExtraError as e:\n    print('MISSING:', e)\n")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "MISSING:" in r.stdout and "pip install 'ttakit[onnx]'" in r.stdout


@pytest.mark.skipif(not YOLOX.exists(), reason="the shared YOLOX-nano ONNX model (/work/shared/models) is absent")
def test_onnx_without_onnxruntime_cli(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / "a.png")
    r = blocked("onnxruntime", "import sys\nfrom ttakit.interfaces.cli import main\n"
                               f"sys.exit(main(['predict', {str(YOLOX)!r}, {str(tmp_path / 'a.png')!r}]))")
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("ttakit: error: ") and "pip install 'ttakit[onnx]'" in lines[0]
    assert "internal error" not in r.stderr


@pytest.mark.skipif(not (RESNETS / "resnet20-12fca82f.th").is_file(),
                    reason="the shared ResNet-20 checkpoint (/work/shared/models) is absent")
@pytest.mark.parametrize("module, argv, extra", [
    ("ray", ["predict", "zoo:resnet20", "a.png", "--engine", "ray", "--out", "preds"], "ray"),
    ("ray", ["serve", "zoo:resnet20", "--engine", "ray"], "ray"),
    ("fastapi", ["serve", "zoo:resnet20"], "serve"),
    ("onnxruntime", ["predict", "zoo:resnet20", "a.png", "--runtime", "onnx"], "onnx"),
    ("onnxruntime", ["serve", "zoo:resnet20", "--runtime", "onnx"], "onnx"),
])
def test_a_zoo_model_without_the_extra_the_options_need_cli(module, argv, extra, tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), (10, 200, 30)).save(tmp_path / "a.png")
    r = blocked(module, f"import os, sys\nos.chdir({str(tmp_path)!r})\nfrom ttakit.interfaces.cli import main\n"
                        f"sys.exit(main({argv + ['--weights', str(RESNETS)]!r}))")
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("ttakit: error: ") and f"pip install 'ttakit[{extra}]'" in lines[0]
    assert "runtime=" not in lines[0]  # the command line speaks in flags


def test_all_extra_includes_coco():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    listed = extras["all"][0].split("[", 1)[1].rstrip("]").split(",")
    assert "coco" in listed
    assert set(listed) <= set(extras)

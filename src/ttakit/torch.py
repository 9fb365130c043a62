"""PyTorch front door: ``from ttakit.torch import TTAModule``, an
``nn.Module`` running a model with test-time augmentation (the views, the
policy's normalisation, the model and the merge), which ``torch.jit.script``,
``torch.export`` and ``torch.onnx.export`` accept. See
:mod:`ttakit.graph.torch_module` and docs/export.md."""

from .graph.torch_module import TTAModule

__all__ = ["TTAModule"]

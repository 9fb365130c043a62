"""Test-time augmentation as one graph: the views, the policy's
normalisation, the model and the merge in one ``nn.Module``
(:class:`TTAModule`, also ``ttakit.torch.TTAModule``) or one file
(:func:`export`: ONNX or TorchScript), deployable without ttakit.

    >>> import ttakit
    >>> ttakit.export(model, "d4", "model_tta.onnx", input_shape=(3, 32, 32))

See docs/export.md. Views are lowered to graph operations in
:mod:`~ttakit.graph.view_ops`, merges in :mod:`~ttakit.graph.merge_ops`.
"""

from .save import FORMATS, describe, export, onnx_bytes
from .torch_module import TTAModule
from .view_ops import EXPORTABLE

__all__ = ["TTAModule", "export", "onnx_bytes", "describe", "FORMATS", "EXPORTABLE"]

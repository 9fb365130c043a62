"""``ttakit export``: write a model with its test-time augmentation as one
ONNX graph (or TorchScript module), deployable without ttakit. The work is
:func:`ttakit.export` (:mod:`ttakit.graph`)."""

from __future__ import annotations

import argparse

from ...errors import UsageError
from ...io import images
from ...models.loading import SUFFIXES, load_model_file
from .model_data import ZOO
from .common import EXIT_OK, Command, cannot_write, load_policy, normalize, positive_int, warn

DESCRIPTION = """\
Write MODEL with test-time augmentation as one file: the policy's views, its
normalisation (--mean/--std, or the tuned policy's own), the model and the
merge (the tuned policy's temperature or learned weights) in one ONNX graph
with a dynamic batch axis, which any ONNX runtime runs without ttakit.

The graph takes a batch of images of one size (--size, --channels) in
--data-layout, as float32 (used as given: pixels in [0, 1], as ttakit takes
floats) or, with --input-dtype uint8, as 0-255 pixels it scales to [0, 1]
itself. Its output "probs" (batch, C) equals ttakit's merged probabilities
(Classifier.predict_proba) for the same policy and merge. Before writing, the
file is run on random inputs and compared with ttakit's module (within 1e-5).

Exported: D4 flips and turns, shift, rotate, affine, scale, crop, multiply,
add, contrast, channel_shift, noise and their products; merges mean, sum,
gmean, logits, sharpen, weighted, learned, max, min and temperatures. Other
views (registered by a user), vote and adaptive policies are refused by name.
See docs/export.md.
"""

EPILOG = """\
examples:
  ttakit export model.pt --policy d4 --size 32 32 --out model_tta.onnx
  ttakit export zoo:resnet20 --policy d4 --data-layout NHWC --input-dtype uint8 --out resnet20_d4.onnx
  ttakit export model.pt --policy tuned.yaml --size 224 224 --data-layout NHWC --input-dtype uint8 --out tta.onnx
  ttakit export model.pt --policy "identity + hflip" --size 32 32 --format torchscript --out tta.pt
"""

def configure(p: argparse.ArgumentParser) -> None:
    from ...graph import FORMATS
    from ...merge import MERGES

    p.add_argument("model", metavar="MODEL", help="a PyTorch model saved as TorchScript (.pt, .pth, .ts, "
                                                  ".torchscript), returning class scores (N, C), or "
                                                  "zoo:resnet20 / zoo:resnet32 (the published CIFAR-10 ResNets, "
                                                  "with their normalisation, 32 x 32)")
    p.add_argument("--policy", "-p", default="identity + hflip", metavar="SPEC_OR_FILE",
                   help="the views: a spec such as 'd4', or a policy file (.yaml, .yml, .json) whose merge and "
                        "normalisation are used. Default: 'identity + hflip'")
    p.add_argument("--merge", "-m", default=None, metavar="NAME",
                   help=f"how to merge the views: {', '.join(m for m in MERGES if m != 'vote')}. "
                        "Default: the policy file's own, else mean")
    p.add_argument("--format", "-f", choices=FORMATS, default="onnx", help="the file written. Default: onnx")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="the file to write")
    g = p.add_argument_group("graph input")
    g.add_argument("--size", nargs="+", default=None, metavar=("H", "W"),
                   help="the images' size, fixed in the graph: 'H W', 'HxW' or 'N' for square (required, except for "
                        "the zoo models: 32 x 32)")
    g.add_argument("--channels", type=positive_int, default=3, metavar="C", help="channels. Default: 3")
    g.add_argument("--data-layout", choices=("NCHW", "NHWC"), type=str.upper, default="NCHW",
                   help="the layout of the graph's input. Default: NCHW")
    g.add_argument("--input-dtype", choices=("float32", "uint8"), default="float32",
                   help="float32: values used as given (pixels in [0, 1]); uint8: 0-255 pixels, scaled by "
                        "1/255 in the graph. Default: float32")
    g = p.add_argument_group("model")
    g.add_argument("--mean", type=float, nargs="+", default=None, metavar="M",
                   help="per-channel mean subtracted after the views, on pixels in [0, 1]. Default: the policy "
                        "file's, else none")
    g.add_argument("--std", type=float, nargs="+", default=None, metavar="S",
                   help="per-channel std divided by after subtracting --mean. Default: 1")
    g.add_argument("--output-kind", choices=("auto", "probs", "logits"), default="auto",
                   help="what the model returns; auto: the policy file's, else read off the model's outputs on "
                        "random inputs. Default: auto")
    g.add_argument("--model-layout", choices=("NCHW", "NHWC"), type=str.upper, default=None,
                   help="the layout the model consumes. Default: the policy file's, else NCHW")
    g.add_argument("--opset", type=positive_int, default=None, metavar="N",
                   help="ONNX opset. Default: 17")
    g.add_argument("--weights", default=None, metavar="DIR",
                   help="folder of the zoo ResNet checkpoints. Default: $TTAKIT_MODELS")


def run(args: argparse.Namespace) -> int:
    from ...graph import export
    from ...models.runtime import OPSET

    policy = load_policy(args.policy)
    pre = normalize(args.mean, args.std, "L" if args.channels == 1 else "RGB")
    model, pre, size = _model(args, policy, pre)
    h, w = size
    shape = (args.channels, h, w) if args.data_layout == "NCHW" else (h, w, args.channels)
    try:
        path = export(model, policy, args.out, args.format, input_shape=shape, merge=args.merge,
                      data_layout=args.data_layout, input_dtype=args.input_dtype, model_layout=args.model_layout,
                      output=args.output_kind, preprocess=pre, opset=args.opset or OPSET)
    except OSError as e:
        raise cannot_write(args.out, e) from None
    n = len(policy.unique())
    warn(f"wrote {path} ({args.format}): {n} distinct view{'s' if n != 1 else ''}; input "
         f"(batch, {', '.join(map(str, shape))}) {args.input_dtype} {args.data_layout}, output probs (batch, C)")
    return EXIT_OK


def _model(args: argparse.Namespace, policy, pre):
    """``(model, preprocess, (H, W))`` for MODEL: a TorchScript file, or a zoo ResNet."""
    size = images.parse_size(args.size) if args.size else None
    if args.model in ZOO:
        from ...models import Normalize
        from ...zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

        model = load_cifar_resnet(int(args.model.split("resnet")[1]), root=args.weights)
        tuned = policy.inputs is not None and policy.inputs.mean is not None
        if pre is None and not tuned:
            pre = Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD)
        return model, pre, size or (32, 32)
    kind = SUFFIXES.get("." + args.model.rsplit(".", 1)[-1].lower()) if "." in args.model else None
    if kind != "torchscript":
        raise UsageError(f"export takes a PyTorch model saved as TorchScript (.pt, .pth, .ts, .torchscript) or "
                         f"{' / '.join(ZOO)}; got {args.model}")
    if size is None:
        raise UsageError("--size H W is needed: the graph is built for one image size")
    return load_model_file(args.model), pre, size


COMMAND = Command("export", "write a model with its test-time augmentation as one ONNX graph",
                  configure=configure, run=run, description=DESCRIPTION, epilog=EPILOG)

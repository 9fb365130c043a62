#!/usr/bin/env python
"""D4 TTA on ResNet-20 as one exported graph: ONNX Runtime vs ttakit runtime="onnx" vs ttach.

Arms, timed side by side over interleaved rounds on the same N CIFAR-10 test
images, at ``--threads`` threads (torch and ONNX Runtime):

* exported graph: ``ttakit.export(model, "d4", ..., data_layout="NHWC",
  input_dtype="uint8", preprocess=Normalize(...))`` written once, run by a
  plain ``onnxruntime.InferenceSession`` on uint8 NHWC batches of
  ``--batch`` images (the views, normalisation, model and merge all inside
  the graph);
* ttakit onnx: ``Classifier(model, "d4", data_layout="NHWC", preprocess=...,
  runtime="onnx")`` on the same uint8 images (warmed up before timing);
* ttach: ``ClassificationTTAWrapper(model, aliases.d4_transform(), "mean")``
  with the normalisation as the model's first layer, on float NCHW batches
  of ``--ttach-batch`` converted before timing.

Reported: images/s per arm (median over rounds, min-max) and the per-round
throughput ratios, with the load average before and after; the exported
graph's probabilities are compared with ttakit eager's (target: within 1e-4).
A smoke run (``--n 64 --repeats 1``) checks the script; figures need a quiet
machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import warnings

import _common as C


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=C.default_data(), help="CIFAR-10 binary folder")
    p.add_argument("--weights", default=os.environ.get("TTAKIT_MODELS"), help="folder of the ResNet checkpoints")
    p.add_argument("--n", type=int, default=500, help="test images")
    p.add_argument("--batch", type=int, default=256, help="images per call of the exported graph")
    p.add_argument("--ttach-batch", type=int, default=64, help="ttach input batch size")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    C.add_protocol_args(p)
    return p.parse_args(argv)


def arms(args, images, folder):
    import numpy as np
    import onnxruntime as ort
    import torch
    import ttach

    import ttakit
    from ttakit.zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

    model = load_cifar_resnet(20, root=args.weights).eval()
    pre = ttakit.Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD)
    path = ttakit.export(model, "d4", os.path.join(folder, "resnet20_d4.onnx"), input_shape=images.shape[1:],
                         data_layout="NHWC", input_dtype="uint8", preprocess=pre)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def graph():
        return np.concatenate([session.run(["probs"], {"input": images[s:s + args.batch]})[0]
                               for s in range(0, len(images), args.batch)])

    clf = ttakit.Classifier(model, "d4", data_layout="NHWC", preprocess=pre, runtime="onnx")
    clf.run(images[:64])  # export and check against eager, before timing

    mean = torch.tensor(CIFAR_RESNET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_RESNET_STD).view(1, 3, 1, 1)

    class Norm(torch.nn.Module):
        def forward(self, x):
            return (x - mean) / std

    wrapper = ttach.ClassificationTTAWrapper(torch.nn.Sequential(Norm(), model).eval(), ttach.aliases.d4_transform(),
                                             merge_mode="mean")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous()

    def ttach_run():
        with torch.inference_mode():
            return torch.cat([wrapper(x[s:s + args.ttach_batch]) for s in range(0, len(x), args.ttach_batch)])

    eager = ttakit.Classifier(model, "d4", data_layout="NHWC", preprocess=pre).predict_proba(images)
    return {"exported graph": graph, "ttakit onnx": lambda: clf.predict_proba(images), "ttach": ttach_run}, eager


def main(argv=None):
    args = parse_args(argv)
    C.ensure_env()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    C.begin("bench_export: D4 ResNet-20, exported graph (ONNX Runtime) vs ttakit onnx vs ttach", args)
    images, _ = C.load_cifar(args.data, "test", args.n)
    with tempfile.TemporaryDirectory() as folder:
        fns, eager = arms(args, images, folder)
        diff = float(np.abs(fns["exported graph"]() - eager).max())
        times = C.interleave(fns, args.repeats)
    n = len(images)
    speed = {k: [n / t for t in v] for k, v in times.items()}
    ratios = {f"{a} / {b}": C.summary(C.ratios(times[b], times[a]))  # b's time over a's: throughput ratio
              for a, b in (("exported graph", "ttach"), ("ttakit onnx", "ttach"), ("exported graph", "ttakit onnx"))}
    C.say(f"\nD4 on {n} images, {args.repeats} interleaved rounds, {args.threads} threads")
    rows = [[k, f"{statistics.median(s):.0f} ({min(s):.0f}-{max(s):.0f})"] for k, s in speed.items()]
    rows += [[k, C.fmt_ratio(v, 2)] for k, v in ratios.items()]
    C.say(C.table(rows, ["arm: images/s, or throughput ratio", "median over rounds (min-max)"]))
    ok = diff <= 1e-4
    C.say(f"exported graph vs ttakit eager: max |diff| of probabilities {diff:.1e} ({'ok' if ok else 'ABOVE 1e-4'})")
    C.finish(args, json_path=args.json, payload={"benchmark": "export", "machine": C.machine(), "args": vars(args),
                                                 "n": n, "seconds": times, "images_per_s": speed, "ratios": ratios,
                                                 "max_abs_diff": diff})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

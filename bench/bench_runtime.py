#!/usr/bin/env python
"""D4 TTA through a faster runtime: ttakit eager / ONNX Runtime / torch.compile vs ttach.

For each model (the published ResNet-20, and the tutorial CNN with random
weights), arms timed side by side over interleaved rounds on the same N
CIFAR-10 test images:

* ttakit eager: ``Classifier(model, "d4", data_layout="NHWC", preprocess=...)``
  on uint8 NHWC images (its own conversion, augmentation, merging and
  uncertainty statistics inside the timed region);
* ttakit onnx: the same with ``runtime="onnx"`` (exported and checked
  against eager on the first batch, before timing: a warm-up call);
* ttakit onnx, no spinning: the same with ONNX Runtime's threads not
  spinning while they wait (``ttakit.models.runtime.ONNX_SPINNING = False``);
* onnxruntime alone: the exported session on the 8 D4 views made and
  normalised before timing, in batches of 512 (the floor of the onnx arm:
  what ttakit adds is the difference);
* ttakit compile: the same with ``runtime="compile"`` (``--no-compile`` skips
  it; compiling takes minutes here and happens in the warm-up call);
* ttach: ``ClassificationTTAWrapper(model, aliases.d4_transform(), "mean")``
  on the eager model (normalisation as the model's first layer; it commutes
  with the D4 views), on float NCHW batches converted before timing, at the
  fastest of ``--ttach-sizes`` (swept first).

Reported: images/s per arm (median over rounds), wall and CPU seconds, and
per-round ratios ttakit/ttach in throughput (higher is better), under the
protocol of ``protocol.py`` (a busy machine marks the result contended); the
merged probabilities of every arm are compared with ttakit eager's.
``--profile`` adds where the onnx arm's time goes (cProfile, shares of one
call: valid as shares even on a busy machine, unlike the ratios).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings

import _common as C


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=C.default_data(), help="CIFAR-10 binary folder")
    p.add_argument("--models", nargs="+", default=["resnet20", "tutorial"], choices=["resnet20", "tutorial"])
    p.add_argument("--weights", default=os.environ.get("TTAKIT_MODELS"), help="folder of the ResNet checkpoints")
    p.add_argument("--n", type=int, default=500, help="test images")
    p.add_argument("--ttach-sizes", type=int, nargs="+", default=[64, 256], help="ttach input batch sizes swept")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="include the runtime='compile' arm")
    p.add_argument("--threads", type=int, default=2, help="torch threads (and ONNX Runtime's, which follows)")
    p.add_argument("--profile", action="store_true", help="profile one call of the onnx arm (shares of time)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    C.add_protocol_args(p)
    return p.parse_args(argv)


def bench_model(name, args, images):
    import numpy as np
    import torch
    import ttach

    import ttakit
    from ttakit.errors import RuntimeFallbackWarning
    from ttakit.models import Normalize
    from ttakit.zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet, tutorial_cnn_torch

    torch.manual_seed(args.seed)
    if name == "resnet20":
        model = load_cifar_resnet(20, root=args.weights).eval()
        pre = Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD)
        mean = torch.tensor(CIFAR_RESNET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR_RESNET_STD).view(1, 3, 1, 1)

        class Norm(torch.nn.Module):
            def forward(self, x):
                return (x - mean) / std

        ttach_model = torch.nn.Sequential(Norm(), model).eval()
    else:
        model = ttach_model = tutorial_cnn_torch().eval()
        pre = None
    n = len(images)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous()
    wrapper = ttach.ClassificationTTAWrapper(ttach_model, ttach.aliases.d4_transform(), merge_mode="mean")

    def ttach_run(bs):
        def run():
            with torch.inference_mode():
                return torch.cat([wrapper(x[s:s + bs]) for s in range(0, n, bs)])
        return run

    from ttakit.models import runtime as rt

    runtimes = ["eager", "onnx", "onnx, no spinning"] + (["compile"] if args.compile else [])
    arms, fallbacks, clfs = {}, {}, {}
    for rtm in runtimes:
        rt.ONNX_SPINNING = rtm != "onnx, no spinning"  # read when the session is made (the warm-up)
        clf = ttakit.Classifier(model, "d4", data_layout="NHWC", preprocess=pre, runtime=rtm.split(",")[0])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeFallbackWarning)
            print(f"[{name}] warm-up ttakit {rtm} ...", flush=True)
            t, _ = C.timed(clf.run, images[:64])
        rt.ONNX_SPINNING = True
        fell = [str(w.message) for w in caught if issubclass(w.category, RuntimeFallbackWarning)]
        fallbacks[rtm] = fell
        print(f"[{name}] ttakit {rtm}: first call {t:.1f} s" + (f"; FELL BACK: {fell}" if fell else ""), flush=True)
        arms[f"ttakit {rtm}"] = (lambda c: lambda: c.run(images))(clf)
        clfs[rtm] = clf
    floor = ort_floor(clfs["onnx"], x, pre)
    if floor is not None:
        arms["onnxruntime alone"] = floor
    if args.profile:
        profile(name, arms["ttakit onnx"])

    sweep = C.interleave({bs: ttach_run(bs) for bs in args.ttach_sizes}, 1)
    best = min(sweep, key=lambda b: sweep[b][0])
    print(f"[{name}] ttach sweep (1 round): " + ", ".join(f"{b}: {n / t[0]:.0f} img/s" for b, t in sweep.items())
          + f" -> {best}", flush=True)
    arms["ttach"] = ttach_run(best)

    times = C.interleave(arms, args.repeats)
    speed = {k: [n / t for t in v] for k, v in times.items()}
    ratios_floor = {}
    if "onnxruntime alone" in times:
        ratios_floor["ttakit onnx / onnxruntime alone (time)"] = C.summary(
            C.ratios(times["ttakit onnx"], times["onnxruntime alone"]))
    ratios = {f"{k} / ttach": C.summary(C.ratios(times["ttach"], times[k]))
              for k in arms if k != "ttach"}  # ttach's time over ours: throughput ratio
    if "ttakit onnx" in times:
        ratios["ttakit onnx / ttakit eager"] = C.summary(C.ratios(times["ttakit eager"], times["ttakit onnx"]))
    ratios.update(ratios_floor)

    ref = arms["ttakit eager"]().probs
    agree = {}
    for k, f in arms.items():
        if k in ("ttakit eager", "onnxruntime alone"):
            continue
        out = f()
        p = out.probs if hasattr(out, "probs") else out.numpy()
        comparable = hasattr(out, "probs") or np.allclose(p.sum(1), 1, atol=1e-3)
        # ttach averages what the model returns: logits for ResNet-20 (ttakit averages probabilities)
        agree[k] = {"max_abs_diff": float(np.abs(p - ref).max()) if comparable else None,
                    "label_agreement": float((p.argmax(1) == ref.argmax(1)).mean())}
    print(f"\n[{name}] D4 on {n} images, {args.repeats} interleaved rounds, ttach at input batch {best}; "
          f"load avg now {os.getloadavg()[0]:.2f}")
    C.say(C.table([[k, f"{statistics.median(s):.0f}", f"{min(s):.0f}", f"{max(s):.0f}"] for k, s in speed.items()],
                  ["arm", "images/s (median)", "min", "max"]))
    C.say(C.time_table(times))
    C.say(C.table([[k, C.fmt_ratio(v, 2)] for k, v in ratios.items()],
                  ["throughput ratio (median over rounds, min-max)", "value"]))
    C.say(C.table([[k, "n/a (ttach averages logits)" if v["max_abs_diff"] is None else f"{v['max_abs_diff']:.1e}",
                    f"{v['label_agreement']:.2%}"] for k, v in agree.items()],
                  ["vs ttakit eager", "max |diff| of probs", "labels agree"]))
    return {"ttach_batch": best, "ttach_sweep": {str(k): v for k, v in sweep.items()}, "seconds": times,
            "images_per_s": speed, "ratios": ratios, "agreement": agree, "fallbacks": fallbacks,
            "load_avg_after": list(os.getloadavg())}


def ort_floor(clf, x, pre):
    """The onnx arm's exported session alone on the 8 D4 views of ``x``
    (float NCHW in [0, 1]), made and normalised before timing; None when
    the onnx arm fell back to eager."""
    import torch

    from ttakit.models.onnx_model import OnnxModel

    chosen = getattr(clf.adapter, "_chosen", {}).get(tuple(x.shape[1:]))
    if not isinstance(chosen, OnnxModel):
        return None
    z = pre(x) if pre is not None else x
    views = [torch.rot90(v, k, (2, 3)) for v in (z, z.flip(3)) for k in range(4)]
    batches = [v[s:s + 512].contiguous().numpy() for v in views for s in range(0, len(z), 512)]
    session, name = chosen.session, chosen.input_name

    def run():
        return [session.run(None, {name: b})[0] for b in batches]
    run()
    return run


def profile(name, fn, top: int = 12):
    """Where one call of ``fn`` spends its time: cProfile's own time per
    function, as shares of the call (valid on a busy machine as shares)."""
    import cProfile
    import pstats

    pr = cProfile.Profile()
    t, _ = C.timed(lambda: (pr.enable(), fn(), pr.disable()))
    st = pstats.Stats(pr).stats
    rows = sorted(((v[2], f"{k[2]} ({os.path.basename(k[0])}:{k[1]})") for k, v in st.items()), reverse=True)[:top]
    C.say(f"\n[{name}] profile of one ttakit onnx call ({t:.2f} s wall), own time per function:")
    C.say(C.table([[fn_, f"{own / t:.1%}"] for own, fn_ in rows], ["function", "share"]))


def main(argv=None):
    args = parse_args(argv)
    C.ensure_env()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    C.begin("bench_runtime: D4 TTA, ttakit eager / onnx / compile vs ttach", args)
    images, _ = C.load_cifar(args.data, "test", args.n)
    results = {name: bench_model(name, args, images) for name in args.models}
    ok = all(v["max_abs_diff"] is None or v["max_abs_diff"] <= 1e-4
             for r in results.values() for v in r["agreement"].values())
    if "resnet20" in results:
        r = results["resnet20"]["ratios"]["ttakit onnx / ttach"]["median"]
        C.say(f"\ntarget: ResNet-20 D4, ttakit onnx >= 2x ttach: {r:.2f}x -> {'met' if r >= 2 else 'MISSED'}")
    C.say(f"outputs agree within 1e-4: {'yes' if ok else 'NO'}")
    C.finish(args, json_path=args.json, payload={
        "benchmark": "runtime", "machine": C.machine(), "args": vars(args), "n": len(images),
        "models": results})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""``ttakit predict --engine ray``: the same prediction as a resumable batch
job on Ray (the ``ttakit[ray]`` extra). Adds the options and runs
:func:`ttakit.scale.run_job`; ``predict`` calls it for ``--engine ray``."""

from __future__ import annotations

import argparse

from ...errors import UsageError
from ...io import images
from .common import EXIT_FAILED_INPUTS, EXIT_OK, in_flags, load_policy, normalize, positive_int, read_classes, warn

ENGINES = ("local", "ray")
#: failures named on stderr; the others are in the failures file
SHOWN_FAILURES = 10


def at_least(low: float, *, inclusive: bool):
    """argparse type: a number above ``low`` (or equal to it when ``inclusive``)."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = float("nan")
        if not (v >= low if inclusive else v > low) or v == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a number {'>=' if inclusive else '>'} {low:g}, got {text!r}")
        return v

    return parse


def add_options(p: argparse.ArgumentParser) -> None:
    from ...scale.sources import BLOCK_SIZE

    g = p.add_argument_group("scale-out (--engine ray)")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: this process; ray: a resumable batch job on Ray (pip install 'ttakit[ray]'). "
                        "Default: local")
    g.add_argument("--address", default=None, metavar="ADDR",
                   help="join the Ray cluster at ADDR (auto, HOST:PORT or ray://HOST:PORT). Default: start a "
                        "local Ray on this machine")
    g.add_argument("--actors", type=positive_int, default=None, metavar="N",
                   help="actors, each loading the model once. Default: as many as the cluster holds (its CPUs "
                        "divided by --cpus-per-actor, or GPUs by --gpus-per-actor)")
    g.add_argument("--cpus-per-actor", type=at_least(0, inclusive=False), default=1.0, metavar="C",
                   help="CPUs each actor reserves (its torch threads). Default: 1")
    g.add_argument("--gpus-per-actor", type=at_least(0, inclusive=True), default=0.0, metavar="G",
                   help="GPUs each actor reserves (0.5 shares one between two); with G > 0 the model runs on "
                        "cuda unless --device says otherwise. Default: 0")
    g.add_argument("--block-size", type=positive_int, default=BLOCK_SIZE, metavar="N",
                   help=f"inputs per block, the unit each actor takes and the job commits. Default: {BLOCK_SIZE}")
    g.add_argument("--num-cpus", type=positive_int, default=None, metavar="N",
                   help="CPUs of the local Ray (without --address). Default: all")
    g.add_argument("--image-column", default="image", metavar="NAME",
                   help="column of Parquet shards holding the encoded images. Default: image")
    g.add_argument("--id-column", default="id", metavar="NAME",
                   help="column of Parquet shards naming each row (else SHARD#ROW). Default: id")


def check_options(args: argparse.Namespace, p_error=None) -> None:
    """Refuse the scale-out options without ``--engine ray``, and the
    local engine's output options with it."""
    scale = {"--address": args.address, "--actors": args.actors, "--num-cpus": args.num_cpus,
             "--cpus-per-actor": args.cpus_per_actor != 1.0, "--gpus-per-actor": args.gpus_per_actor != 0.0}
    if args.engine != "ray":
        given = [k for k, v in scale.items() if v]
        if given:
            raise UsageError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} only for --engine ray")
        return
    if not args.out:
        raise UsageError("--engine ray writes Parquet files to a folder: pass --out DIR")
    if args.format or args.top_k:
        raise UsageError("--engine ray writes Parquet with every probability; --format and --top-k apply to the "
                         "local engine")
    if args.address is not None and args.num_cpus is not None:
        raise UsageError("--num-cpus sizes a local Ray; a cluster joined with --address has its own")


def run(args: argparse.Namespace) -> int:
    from ...scale import run_job
    from ...scale.manifest import FAILURES

    check_options(args)
    res = run_job(
        args.model, args.images, args.out, load_policy(args.policy), args.merge, model_layout=args.model_layout,
        device=args.device, output=args.output_kind, preprocess=normalize(args.mean, args.std, args.mode),
        classes=read_classes(args.classes) if args.classes else None, batch_size=args.batch_size, size=args.size,
        mode=args.mode, recursive=args.recursive, max_pixels=args.max_pixels, block_size=args.block_size,
        actors=args.actors, cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor,
        address=args.address, num_cpus=args.num_cpus, image_column=args.image_column, id_column=args.id_column,
        progress=bool(args.progress), weights=args.weights)
    for i, why in res.failures[:SHOWN_FAILURES]:
        warn(f"cannot read {images.printable(i)}: {in_flags(why)}")
    if len(res.failures) > SHOWN_FAILURES:
        warn(f"... and {len(res.failures) - SHOWN_FAILURES} more in {res.out / FAILURES}")
    resumed = f", {res.resumed} of them committed by an earlier run" if res.resumed else ""
    warn(f"wrote {res.written} predictions to {res.out} ({res.blocks} blocks{resumed}; {res.seconds:.2f} s, of "
         f"which {res.startup_seconds:.2f} s starting Ray)")
    if res.failures:
        warn(f"{len(res.failures)} of {len(res.failures) + res.written} inputs could not be read or predicted "
             f"(listed in {res.out / FAILURES})")
        return EXIT_FAILED_INPUTS
    return EXIT_OK


__all__ = ["ENGINES", "add_options", "check_options", "run"]

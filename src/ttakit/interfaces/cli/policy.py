"""``ttakit policy``: expand a policy, merge its equal views, show the cost."""

from __future__ import annotations

import argparse
import json
import sys

from .common import EXIT_OK, Command, cannot_write, load_policy, warn


LIMITS_HELP = (
    "limits (checked before the work, refused with exit code 2; raise one with its environment variable):\n"
    "  TTAKIT_MAX_VIEWS=4096         distinct views (forward passes per input)\n"
    "  TTAKIT_MAX_COPIES=100000      views counting duplicates (random(n) copies, expanded products)\n"
    "  TTAKIT_MAX_SPEC_CHARS=10000   characters in a spec\n"
    "  TTAKIT_MAX_DEPTH=64           nesting of brackets in a spec, of lists/mappings in a file\n"
    "  TTAKIT_MAX_FILE_BYTES=1048576 size of a policy file (YAML anchors and aliases are refused)\n"
    "A spec never reads files: pass a policy file as SPEC_OR_FILE (or --policy FILE to predict).")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("policy", metavar="SPEC_OR_FILE",
                   help="a policy spec such as 'd4' or 'random(7, seed=0, horizontal_flip=true)', or a "
                        "policy file (.yaml, .yml, .json)")
    p.add_argument("--format", "-f", choices=("table", "yaml", "json"), default="table",
                   help="table: the distinct views with weights and shares; yaml or json: the deduplicated "
                        "policy as a policy file. Default: table")
    p.add_argument("--save", default=None, metavar="FILE",
                   help="also write the deduplicated policy to FILE (YAML for .yaml/.yml, else JSON), "
                        "for --policy FILE")


def run(args: argparse.Namespace) -> int:
    pol = load_policy(args.policy)
    unique = pol.unique()
    counts = f"{len(pol)} views, {len(unique)} distinct"
    if args.format == "table":
        print(f"policy: {pol.source or pol.spec}")
        if pol.source and pol.source != pol.spec:
            print(f"spec:   {unique.spec}")
        print(pol.describe())
    elif args.format == "yaml":
        import yaml

        print(f"# {pol.source or pol.spec}\n# {counts}")
        sys.stdout.write(yaml.safe_dump(unique.to_dict(), sort_keys=False))
    else:
        d = unique.to_dict()
        d.update(expanded_views=len(pol), distinct_views=len(unique))
        print(json.dumps(d, indent=2))
    if args.save:
        try:
            unique.save(args.save)
        except OSError as e:
            raise cannot_write(args.save, e) from None
        warn(f"saved the policy ({counts}) to {args.save}")
    return EXIT_OK


COMMAND = Command("policy", "show a policy's distinct views, weights and cost", configure=configure, run=run,
                  description="Expand a policy spec or file into its views, merge equal views (summing "
                              "their weights: the same merged result for fewer forward passes) and show "
                              "them, with the expanded and distinct counts.",
                  epilog=LIMITS_HELP)

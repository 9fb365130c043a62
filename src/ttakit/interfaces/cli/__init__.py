"""The ``ttakit`` command line.

    ttakit predict model.onnx images/ --policy "d4" --out preds.csv
    ttakit policy "random(7, seed=0, horizontal_flip=true)"
    ttakit views

One module per command, each defining ``COMMAND``, a :class:`Command`: a
name, a one-line help, ``configure(parser)`` adding its arguments and
``run(args) -> int`` returning the exit code. :data:`COMMANDS` lists them
explicitly, in the order ``ttakit --help`` shows them: importing a module
registers nothing. The commands only parse options and print; the work is
in the library (:mod:`ttakit.io`, :mod:`ttakit.models.loading`,
:func:`ttakit.tune`, :func:`ttakit.evaluate`, :mod:`ttakit.experiments`).
To add a command, write a module with a ``COMMAND`` and list it here (or
pass ``commands=`` to :func:`main`).

Exit codes: 0 success; 2 usage or configuration error (bad option, bad
policy, missing model...: the message is printed as ``ttakit: error: ...``,
without a traceback unless ``TTAKIT_TRACEBACK`` is set); 3 some input images
could not be read (the others are still predicted and written); 130
interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback
from collections.abc import Sequence

from ...version import __version__
from ...errors import ModelRunError, TTAKitError, UsageError
from . import demo, evaluate, policy, predict, reproduce, serve, tune, views
from .common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, PROG, Command, error, in_flags

#: the commands, in the order ``ttakit --help`` lists them
COMMANDS: list[Command] = [predict.COMMAND, policy.COMMAND, views.COMMAND, tune.COMMAND, evaluate.COMMAND,
                           reproduce.COMMAND, demo.COMMAND, serve.COMMAND]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=30)


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The parser of ``ttakit``, with a sub-command for each of ``commands``
    (default :data:`COMMANDS`)."""
    commands = COMMANDS if commands is None else list(commands)
    names = [c.name for c in commands]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise UsageError(f"command names must be unique; {', '.join(twice)} given twice")
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter,
        description="Test-time augmentation for any image classifier: fast, deduplicated, measured.",
        epilog="Run 'ttakit COMMAND --help' for a command's options.\n"
               "Exit codes: 0 success, 2 usage or configuration error, 3 some images could not be read.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the ttakit version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    for cmd in commands:
        description = cmd.description or cmd.help
        if "\n" not in description.strip():  # one paragraph: wrap it (the formatter keeps line breaks)
            description = textwrap.fill(description, 79)
        p = sub.add_parser(cmd.name, help=cmd.help, description=description,
                           epilog=cmd.epilog, formatter_class=_Formatter)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None, *, commands: Sequence[Command] | None = None) -> int:
    """Run the command line; returns the exit code (also for ``--help`` and
    argument errors, which argparse reports by exiting)."""
    from ...engine import tune_allocator

    tune_allocator()  # our own process: keep big tensors in the heap (see BENCHMARKS.md)
    parser = build_parser(commands)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or an argparse usage error (already printed)
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    try:
        return int(args._run(args))
    except TTAKitError as e:
        if os.environ.get("TTAKIT_TRACEBACK"):
            traceback.print_exc()
        hint = ("; set TTAKIT_TRACEBACK=1 for the full traceback"
                if isinstance(e, ModelRunError) and not os.environ.get("TTAKIT_TRACEBACK") else "")
        error(in_flags(str(e)) + hint)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `ttakit views | head`: the reader left, which is fine
        try:  # point stdout at devnull so that the flush at exit does not fail again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_OK


__all__ = ["main", "build_parser", "COMMANDS", "Command"]

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

Exit codes: 0 success; 1 an internal error (a bug in ttakit: one line,
please report it with ``TTAKIT_TRACEBACK=1``); 2 usage or configuration
error (bad option, bad policy, missing model, an output that cannot be
written, standard output full...: the message is printed as ``ttakit:
error: ...``, without a traceback unless ``TTAKIT_TRACEBACK`` is set); 3
some inputs could not be read (each named on stderr; the others are still
predicted and written); 4 ``ttakit serve`` cannot listen on its
``--host:--port``; 130 interrupted. Warnings print as one line
``ttakit: warning: ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback
from collections.abc import Sequence

from ...version import __version__
from ...errors import ModelError, ModelRunError, TTAKitError, UsageError
from ...io.prediction import cause_line
from . import demo, evaluate, export, policy, predict, reproduce, serve, task_help, tune, views
from .common import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Command,
    cli_warnings,
    error,
    in_flags,
    silence_stdout,
)

#: the commands, in the order ``ttakit --help`` lists them
COMMANDS: list[Command] = [predict.COMMAND, policy.COMMAND, views.COMMAND, tune.COMMAND, evaluate.COMMAND,
                           reproduce.COMMAND, demo.COMMAND, serve.COMMAND, export.COMMAND]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=30)


def build_parser(commands: Sequence[Command] | None = None,
                 argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``ttakit``, with a sub-command for each of ``commands``
    (default :data:`COMMANDS`). When ``argv`` asks for the help of predict,
    evaluate or tune, that help is about the task the rest of ``argv``
    names (:mod:`~ttakit.interfaces.cli.task_help`)."""
    commands = COMMANDS if commands is None else list(commands)
    names = [c.name for c in commands]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise UsageError(f"command names must be unique; {', '.join(twice)} given twice")
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter,
        description="Test-time augmentation for any model: fast, deduplicated, measured.",
        epilog="Run 'ttakit COMMAND --help' for a command's options.\n"
               "Exit codes: 0 success, 1 internal error, 2 usage or configuration error, 3 some inputs "
               "could not be read, 4 ttakit serve cannot listen on --host:--port.")
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
        if argv and argv[0] == cmd.name and cmd.name in task_help.COMMANDS and task_help.wants_help(argv[1:]):
            task_help.focus(p, cmd.name, task_help.task_of(argv[1:]), cmd.descriptions)
    return parser


def _message(e: TTAKitError) -> str:
    """The error's message; for a model's own failure, cut to the line of
    the model's exception that says what went wrong."""
    text = str(e)
    cause = e.__cause__
    if isinstance(e, ModelError) and not isinstance(e, ModelRunError) and cause is not None:
        head = text.split(f": {type(cause).__name__}: ", 1)[0]
        return f"{head}: {type(cause).__name__}: {cause_line(cause)}"
    return text


def main(argv: Sequence[str] | None = None, *, commands: Sequence[Command] | None = None) -> int:
    """Run the command line; returns the exit code (also for ``--help`` and
    argument errors, which argparse reports by exiting)."""
    from ...engine import tune_allocator

    tune_allocator()  # our own process: keep big tensors in the heap (see BENCHMARKS.md)
    parser = build_parser(commands, sys.argv[1:] if argv is None else list(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or an argparse usage error (already printed)
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    debug = bool(os.environ.get("TTAKIT_TRACEBACK"))
    try:
        with cli_warnings():
            return int(args._run(args))
    except TTAKitError as e:
        if debug:
            traceback.print_exc()
        hint = "; set TTAKIT_TRACEBACK=1 for the full traceback" if isinstance(e, ModelError) and not debug else ""
        error(in_flags(_message(e)) + hint)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `ttakit views | head`: the reader left, which is fine
        silence_stdout()
        return EXIT_OK
    except OSError as e:  # the system refused something (a full disk, a file we may not open)
        if debug:
            traceback.print_exc()
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        error(f"{e.strerror or e}{where}")
        return EXIT_USAGE
    except Exception as e:  # a bug: still one line (the traceback with TTAKIT_TRACEBACK=1)
        if debug:
            traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0][:300]
        error(f"internal error ({type(e).__name__}: {first}); please report it with the output of "
              "TTAKIT_TRACEBACK=1")
        return EXIT_INTERNAL


__all__ = ["main", "build_parser", "COMMANDS", "Command"]

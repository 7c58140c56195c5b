"""The ``attnviz`` command line: one module per subcommand.

Each ``attnviz/cli/<name>.py`` defines ``register(subparsers)`` which adds its parser and sets
``func`` to a ``run(args) -> int``. Bad arguments and every ``AttnvizError`` end with exit status 2
and one line ``error: <sentence>`` on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from attnviz.errors import AttnvizError

SUBCOMMANDS = ["params", "zoo", "train", "eval", "inspect", "experiment", "sanity"]


def output_folder(path: str | None) -> Path | None:
    """``--out`` as a folder that exists (created if needed), or None when not given."""
    if not path:
        return None
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AttnvizError(f"cannot create the output folder {folder} ({err.strerror or err})") from err
    return folder


class _Parser(argparse.ArgumentParser):
    """argparse prints usage + message and exits 2; we keep exit 2 but print one clear line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="attnviz", description="See what CNN attention modules do.")
    from attnviz import __version__

    parser.add_argument("--version", action="version", version=f"attnviz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"attnviz.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"attnviz.cli.{name}":
                continue  # subcommand not present in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AttnvizError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    except BrokenPipeError:  # e.g. `attnviz eval ... | head`: the reader left, which is not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        sys.stderr.write("cancelled\n")
        return 130

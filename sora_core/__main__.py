"""Command line: `python -m sora_core <command> --help`.

An error is one line, `error: ...`, and exit status 2 (130 after Ctrl-C); `--debug` shows the
traceback instead."""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    """argparse's own errors in the same one-line form (subcommand parsers inherit the class)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import cli

    parser = _Parser(prog="python -m sora_core", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show an error's full traceback")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every failure becomes one line; --debug shows where
        if args.debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

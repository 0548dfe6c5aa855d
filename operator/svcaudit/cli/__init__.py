"""The `svcaudit` command: one subcommand per module in this package.

Each subcommand module defines `add_parser(subparsers)` which registers its parser and sets
`func` (a callable taking the parsed args and returning an exit code). Imports are lazy so
that `svcaudit expect` never pays for kopf or the Kubernetes client.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS = ("expect", "check", "run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="svcaudit",
        description="Audit Kubernetes service discovery: endpoints, env vars and DNS.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"svcaudit.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"svcaudit.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m ctdnn COMMAND ...`` (also installed as ``ctdnn``).

Each command lives in a module with a ``register(subparsers)`` function that
adds its subparser and sets ``func`` (parsed args -> exit status). To add a
command, append its module to ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("ctdnn.data.cli", "ctdnn.runner")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctdnn",
        description="Continuous-time deep neural networks with polynomial weights.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns its exit status (argparse exits with 2 on bad usage)."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""`lowbit` command line: a thin layer over the Python API. Each subcommand lives in
lowbit/commands/<name>.py with `register(subparsers)`, which sets `func` on its parser."""
import argparse
import importlib
import os
import sys

from . import __version__
from .errors import LowbitError

COMMANDS = ["convert", "run", "chat", "inspect", "verify", "bench", "perplexity", "imatrix", "export_gguf"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lowbit",
        description="Convert Hugging Face checkpoints to small self-describing .lowbit files and run them.",
        epilog="Run 'lowbit COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"lowbit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"lowbit.commands.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except LowbitError as e:
        print(f"lowbit {args.command}: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"lowbit {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

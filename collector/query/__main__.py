"""``python -m collector.query COMMAND ...``: the query commands without the collector runtime."""

import argparse
import sys

from collector.query.args import one_line_errors
from collector.query.cli import register


def main(argv: list[str] | None = None) -> int:
    parser = one_line_errors(argparse.ArgumentParser(
        prog="genai-collector", description="Query the GenAI spans a genai-collector stored."))
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

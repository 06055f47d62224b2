"""The ``skucdr`` command line.

- ``skucdr demo``: fit on digit domains that ship offline, report, draw the hits;
- ``skucdr fit ROOT --domains A B --out MODEL``: train on your own image folders;
- ``skucdr index MODEL ROOT``: make image folders the gallery to search;
- ``skucdr query MODEL IMAGE...``: the nearest gallery files of query images;
- ``skucdr evaluate MODEL ROOT``: mAP@All and P@k on labelled folders.

Errors print one line and exit with status 2; Ctrl+C exits with 130; warnings print
as one line, ``warning: ...``.
"""

from __future__ import annotations

import argparse
import sys
import warnings

__all__ = ["main"]


def build_parser():
    """The argument parser of every command."""
    from skucdr import __version__

    from . import demo, evaluate, fit, index, query

    parser = argparse.ArgumentParser(
        prog="skucdr",
        description="Unsupervised cross-domain retrieval (UEM, TPSNet) with a scikit-learn API.",
    )
    parser.add_argument("--version", action="version", version=f"skucdr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.add_parser(sub)
    for command in (fit, index, query, evaluate):
        command.add_parser(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings of a command print as ``warning: <message>``, without Python's source
    location."""
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=file if file is not None else sys.stderr)


def main(argv=None):
    """Entry point of the ``skucdr`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    previous, warnings.showwarning = warnings.showwarning, _one_line_warning
    try:
        args.run(args)
    except KeyboardInterrupt:
        print(f"skucdr {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError) as exc:
        print(f"skucdr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = previous
    return 0

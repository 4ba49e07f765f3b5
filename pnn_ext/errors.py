"""How the commands (pnn-train, pnn-ablate, pnn-sweep, pnn-he) end on a user's mistake or a signal:
one line on stderr and an exit code, never a traceback.

    2    a bad flag, setting, file or dataset (``prog: error: ...``), before anything is written
    130  Ctrl-C (SIGINT)
    143  SIGTERM (what ``timeout``, ``kill`` and batch schedulers send)

A user's mistake is an exception of the types each command names (ValueError and the
project's errors derived from it, missing files, a damaged checkpoint); anything else
is a bug and keeps its traceback."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable

EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class UsageError(ValueError):
    """A bad command line (what argparse reports by printing its usage and exiting)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it unwinds as Ctrl-C does (files
    closed, temporary files removed, summary.json written with status interrupted)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument raises UsageError (one line from :func:`run_main`, and
    a caller such as pnn-ablate can check arguments without exiting) instead of
    printing the usage block and calling sys.exit."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def one_line(e: BaseException) -> str:
    """The message of ``e`` on one line (torch's and zlib's messages may span several)."""
    text = " ".join(s.strip() for s in str(e).splitlines() if s.strip())
    return text or type(e).__name__


def _raise_terminated(signum, frame):
    raise Terminated()


def run_main(prog: str, main: Callable[[list[str] | None], int], argv: list[str] | None,
             user_errors: tuple[type[BaseException], ...] = (ValueError,)) -> int:
    """``main(argv)``'s exit code, with ``user_errors`` and signals turned into one line
    on stderr and exit codes 2, 130, 143 (see the module docstring)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return main(argv)
    except Terminated:
        print(f"{prog}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, *user_errors) as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE

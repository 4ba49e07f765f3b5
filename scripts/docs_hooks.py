"""MkDocs hook (mkdocs.yml ``hooks:``): a page line ``<!-- argparse MODULE:FUNCTION -->``
becomes the table of every flag of the command-line parser that ``MODULE.FUNCTION()``
returns (flag, value, default, help), so the docs list every flag of the commands as
the code defines them, never a stale copy."""
from __future__ import annotations

import argparse
import importlib
import re

_PLACEHOLDER = re.compile(r"^<!-- argparse ([\w.]+):(\w+) -->$", re.M)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _value(action: argparse.Action) -> str:
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        return ""
    if action.choices is not None:
        return " \\| ".join(f"`{c}`" for c in action.choices)
    kind = getattr(action.type, "__name__", None)
    return _cell(action.metavar or kind or "value")


def flags_table(parser: argparse.ArgumentParser) -> str:
    rows = ["| flag | value | help |", "|---|---|---|"]
    for action in parser._actions:  # argparse has no public iterator over its actions
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        names = " ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
        rows.append(f"| {names} | {_value(action)} | {_cell(action.help or '')} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **_) -> str:
    def table(m: re.Match) -> str:
        return flags_table(getattr(importlib.import_module(m.group(1)), m.group(2))())
    return _PLACEHOLDER.sub(table, markdown)

"""pnn-sweep's plan: the cells of a grid, each with its run directory, its pnn-train
command and the settings that command resolves to (its identity), all checked before
any run starts or any file is written.

A cell's identity is every pnn-train setting of its command, defaults and a --config
file's included, except those that do not change what a run computes (IGNORED). A run
directory records the identity it was made with (cell.json, and the config in its
summary.json); a finished run is reused only when both records equal the cell's."""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re

from ..errors import UsageError
from ..strict_json import dumps
from . import artifacts
from .ablation import VARIANTS

FINISHED = ("completed", "diverged")
CELL_JSON = "cell.json"
# Settings that say where a run lives or how it is shown, not what it computes: two commands that differ
# only in these are the same cell (a sweep split between machines reads its data from different paths).
IGNORED = ("out_dir", "resume", "overwrite", "allow_changes", "progress", "plots", "data_dir")
# Settings pnn-sweep gives every run itself (--guard is pnn-sweep's own flag).
OWN = ("seed", "out_dir", "resume", "overwrite", "allow_changes", "activation", "guard")
# Characters kept as they are in a run directory's name; any other is written %XX, so that
# two different values never share a directory ("a/b" and "a_b" did).
_SAFE = re.compile(r"[A-Za-z0-9._+:,-]")


def parse_axis(text: str) -> tuple[str, list[str]]:
    """NAME=V1,V2,... -> (setting name, values as given); each value read as the setting's type."""
    from .config import TrainConfig, coerce, setting_types
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in TrainConfig.__dataclass_fields__:
        raise argparse.ArgumentTypeError(f"--grid needs NAME=V1,V2,... with NAME a pnn-train setting, got {text!r}")
    if name in OWN:
        raise argparse.ArgumentTypeError(f"--grid {name}: the sweep sets it for each run")
    vals = [v.strip() for v in values.split(",") if v.strip()]
    hint = setting_types()[name]
    for v in vals:
        try:
            coerce(v, hint)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--grid {name}: {v!r} is not a valid value") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"--grid {name}: no values")
    return name, vals


def parse_seeds(text: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"must list at least one seed, got {text!r}")
    bad = [s for s in values if not 0 <= s < 2 ** 32]
    if bad:
        raise argparse.ArgumentTypeError(f"seeds must be in 0..2**32-1, got {bad}")
    repeated = sorted({s for s in values if values.count(s) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"seeds {repeated} are listed twice")
    return values


def parse_variants(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        raise UsageError(f"unknown variants {bad or text!r}; choose from {list(VARIANTS)}")
    repeated = sorted({v for v in names if names.count(v) > 1})
    if repeated:
        raise UsageError(f"--variants lists {repeated} twice")
    return names


def dir_text(value: str) -> str:
    """A value as one component of a directory name, one-to-one (% and unsafe characters as %XX)."""
    return "".join(c if _SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in value)


def cells(axes: list[tuple[str, list[str]]], variant_names: list[str], seeds: list[int]) -> list[dict]:
    """Every (axis values, variant, seed), in order."""
    names = [a for a, _ in axes]
    return [{"axes": dict(zip(names, combo)), "variant": variant, "seed": seed}
            for combo in itertools.product(*(vals for _, vals in axes)) for variant in variant_names for seed in seeds]


def label(cell: dict) -> str:
    """The cell's run directory below OUT_DIR: NAME=V/.../VARIANT/seedS."""
    return "/".join([*(f"{k}={dir_text(v)}" for k, v in cell["axes"].items()), cell["variant"], f"seed{cell['seed']}"])


def run_dir(root: str, cell: dict) -> str:
    return os.path.join(root, *label(cell).split("/"))


def axis_flags(name: str, value: str) -> list[str]:
    """A setting's value as pnn-train flags: booleans as --name / --no-name."""
    from .config import coerce, setting_types
    flag = "--" + name.replace("_", "-")
    hint = setting_types()[name]
    if hint is bool:
        return [flag if coerce(value, hint) else "--no-" + flag[2:]]
    return [flag, value]


def run_argv(cell: dict, extra: list[str], out: str, guard: bool) -> list[str]:
    flags = [f for name, value in cell["axes"].items() for f in axis_flags(name, value)]
    return (["--activation", "poly", "--no-progress", "--no-plots"] + extra + flags + VARIANTS[cell["variant"]]
            + ["--seed", str(cell["seed"]), "--out-dir", out] + ([] if guard else ["--no-guard"]))


def flag_settings(flags: list[str]) -> set[str]:
    """The settings a list of pnn-train flags sets (a UsageError for a bad flag)."""
    from .config import shared_parser
    return set(vars(shared_parser().parse_args(flags))) - {"config"}


def identity(cfg) -> dict:
    """The settings of a TrainConfig that make a cell, as JSON reads them back."""
    return json.loads(dumps({k: v for k, v in cfg.to_dict().items() if k not in IGNORED}))


def differences(recorded: dict, wanted: dict) -> dict[str, list]:
    """{setting: [recorded, wanted]} for the settings both know (as pnn-train compares a resume)."""
    return {k: [recorded[k], v] for k, v in wanted.items() if k in recorded and k not in IGNORED and recorded[k] != v}


def _config_error(argv: list[str]) -> tuple[object | None, str | None]:
    """(the TrainConfig of a command, None) or (None, why it is refused)."""
    from .config import parse_config
    try:
        return parse_config(argv), None
    except (ValueError, FileNotFoundError) as e:
        return None, str(e)


def _cell_config(cell: dict, argv: list[str], base: list[str]):
    """The cell's TrainConfig, or a UsageError naming what is wrong: one --grid value when
    that value alone (with the arguments after --) is refused the same way, else the cell
    (values refused only together, or a bad argument after --)."""
    cfg, why = _config_error(argv)
    if cfg is not None:
        return cfg
    for name, value in cell["axes"].items():
        if _config_error(base + axis_flags(name, value))[1] == why:
            raise UsageError(f"--grid {name}={value}: {why}")
    raise UsageError(f"cell {label(cell)}: {why}")


def _check_dir(what: str, path: str) -> None:
    """``path`` is a directory this process can write, or one it can create."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{what} {path!r} exists and is not a directory")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{what} {path!r} cannot be created: {existing!r} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path!r} cannot be written: {existing!r} is not writable")


def plan(args) -> list[dict]:
    """Every cell with its "dir", "argv" and "identity", checked: a bad setting (named by its
    --grid value, or by the cell for a combination), a flag the sweep or a variant sets,
    two cells that are one run, an out-dir that is not a directory: a UsageError."""
    extra = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    for what, path in (("out-dir", args.out_dir), ("report-dir", args.report_dir)):
        if path:
            _check_dir(what, path)
    if len({a for a, _ in args.grid}) != len(args.grid):
        raise UsageError("a setting appears in two --grid axes")
    try:
        given = flag_settings(extra)
    except UsageError as e:
        raise UsageError(f"pnn-train arguments after --: {e}") from None
    own = sorted(given & set(OWN))
    if own:
        raise UsageError(f"pnn-train arguments after -- must not set {own}: pnn-sweep sets them for each run")
    variants = parse_variants(args.variants)
    for name, _ in args.grid:
        if name in given:
            raise UsageError(f"--grid {name} and the arguments after -- both set {name}; give it in one place")
        setters = [v for v in variants if name in flag_settings(VARIANTS[v])]
        if setters:
            raise UsageError(f"--grid {name}: the variants {setters} set {name} themselves; sweep it with other "
                             f"variants, or drop the axis")
    for v in variants:
        both = sorted(flag_settings(VARIANTS[v]) & given)
        if both:
            raise UsageError(f"pnn-train arguments after -- set {both}, which the variant {v} sets itself")
    base = extra + ["--activation", "poly", "--out-dir", args.out_dir]
    planned, seen = [], {}
    for cell in cells(args.grid, variants, args.seeds):
        out = run_dir(args.out_dir, cell)
        argv = run_argv(cell, extra, out, args.guard)
        ident = identity(_cell_config(cell, argv, base))
        key = dumps(ident, sort_keys=True)
        if key in seen:
            raise UsageError(f"cells {label(seen[key])} and {label(cell)} are one run (every setting that changes "
                             f"a run is equal); list each value once")
        seen[key] = cell
        planned.append({**cell, "dir": out, "argv": argv, "identity": ident})
    return planned


def _read_json(file: str):
    """A JSON file's content; None when it is absent, False when it cannot be read."""
    if not os.path.isfile(file):
        return None
    try:
        with open(file) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return False


def summary(out: str) -> dict | None:
    """A run's summary.json, or None when it has none or it cannot be read."""
    s = _read_json(artifacts.path(out, artifacts.SUMMARY))
    return s if isinstance(s, dict) else None


def stale(cell: dict) -> str:
    """How the run in the cell's directory differs from the cell, from the records it holds
    (cell.json, summary.json's config); "" when it does not, or holds none."""
    for name, key in ((CELL_JSON, "identity"), (artifacts.SUMMARY, "config")):
        record = _read_json(artifacts.path(cell["dir"], name))
        if record is None:
            continue
        if not isinstance(record, dict) or not isinstance(record.get(key), dict):
            return f"its {name} cannot be read"
        diff = differences(record[key], cell["identity"])
        if diff:
            return ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in list(diff.items())[:4]) \
                + (f" and {len(diff) - 4} more settings" if len(diff) > 4 else "")
    return ""


def finished(cell: dict) -> bool:
    s = summary(cell["dir"])
    return s is not None and s.get("status") in FINISHED and not stale(cell)


def schedule(planned: list[dict], overwrite: bool) -> list[dict]:
    """The cells to run, each with the argv it runs with (continuing an interrupted run of the
    same settings); a directory holding a run of other settings is cleared first when
    ``overwrite``, else it is a UsageError naming the first such cell."""
    old = [(c, why) for c in planned if (why := stale(c))]
    if old and not overwrite:
        cell, why = old[0]
        more = f" (and {len(old) - 1} more cells)" if len(old) > 1 else ""
        raise UsageError(f"cell {label(cell)} in {cell['dir']!r} holds a run made with other settings ({why}){more}; "
                         f"pass --overwrite to run such cells again, or use another --out-dir")
    replace = {id(c) for c, _ in old}
    todo = []
    for c in planned:
        if id(c) in replace:
            todo.append({**c, "replace": True})
        elif finished(c):
            continue
        elif os.path.isfile(artifacts.path(c["dir"], artifacts.LAST)):  # interrupted before: continue it
            todo.append({**c, "argv": c["argv"] + ["--resume", "last"], "replace": False})
        else:
            todo.append({**c, "replace": False})
    return todo


def write_record(cell: dict) -> None:
    """cell.json, the cell's identity and command, written before its run starts. A run of other
    settings being replaced is removed first, so that none of its files is read as the new run's."""
    os.makedirs(cell["dir"], exist_ok=True)
    if cell.get("replace"):
        for name in (artifacts.LAST, *artifacts.REPLACED, CELL_JSON):
            if os.path.exists(artifacts.path(cell["dir"], name)):
                os.remove(artifacts.path(cell["dir"], name))
    artifacts.write_json(artifacts.path(cell["dir"], CELL_JSON),
                         {"command": "pnn-train " + " ".join(cell["argv"]), "identity": cell["identity"]})

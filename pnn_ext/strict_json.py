"""Strict JSON for every file the project writes (metrics.jsonl, summary.json,
ablation.json, sweep.json, pnn-he's reports): JSON has no NaN or infinity, and Python's
json writes the bare tokens NaN and Infinity, which strict readers (jq, JavaScript, most
languages' parsers) reject. Non-finite floats become null."""
from __future__ import annotations

import json
import math

import numpy as np


def strict(obj):
    """``obj`` with every NaN or infinite float (Python or numpy) replaced by None, and
    numpy scalars made Python numbers."""
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def dumps(obj, **kw) -> str:
    """Strict JSON of ``obj`` (see :func:`strict`); other objects by ``str``."""
    return json.dumps(strict(obj), allow_nan=False, default=str, **kw)

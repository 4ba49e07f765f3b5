"""The one activation table (pnn_ext.activations): every spelling of a row computes the
function its polynomial is fitted to, and fitting.TARGETS is the table's rows."""
import inspect

import numpy as np
import pytest
import torch

from pnn_ext import fitting
from pnn_ext.activations import ACTIVATIONS, BY_CALL, BY_METHOD, BY_MODULE

X = torch.linspace(-8, 8, 1601, dtype=torch.float64)
ROWS = {a.name: a for a in ACTIVATIONS}


def _expected(row):
    return torch.from_numpy(np.asarray(row.target(X.numpy()), dtype=np.float64))


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row_parameters_are_its_target_parameters(name):
    row = ROWS[name]
    # a numpy ufunc (np.tanh) has only its input besides numpy's own keywords (out=, where=, ...)
    sig = [] if isinstance(row.target, np.ufunc) else list(inspect.signature(row.target).parameters)[1:]
    assert [param for param, _ in row.module_params] == sig
    assert fitting.TARGETS[name] is row.target


@pytest.mark.parametrize("name", sorted(ROWS))
def test_every_spelling_computes_the_target(name):
    row = ROWS[name]
    want = _expected(row)
    got = {f"module {row.module.__name__}": row.module()(X.clone())}
    for call in row.calls:
        got[f"call {getattr(call.fn, '__qualname__', call.fn)}"] = call.fn(X.clone())
    for method in row.methods:
        got[f"method {method}"] = getattr(X.clone(), method)()
    if row.aten is not None:
        got[f"aten {row.aten}"] = getattr(torch.ops.aten, row.aten)(X.clone())
    for spelling, y in got.items():
        torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12, msg=lambda m, s=spelling: f"{name} {s}: {m}")


def test_indexes_cover_every_row_and_no_spelling_twice():
    assert set(BY_MODULE.values()) == set(ACTIVATIONS)
    calls = [c.fn for a in ACTIVATIONS for c in a.calls]
    assert len(calls) == len(set(calls)) == len(BY_CALL)
    assert all(BY_METHOD[m] is a for a in ACTIVATIONS for m in a.methods)

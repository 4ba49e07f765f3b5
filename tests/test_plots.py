"""A run's PNG plots: written without warnings whatever the values (a loss of exactly 0,
a boundary term of 0, NaN after a divergence)."""
import math
import warnings

import pytest

from pnn_ext.train import plots


def _history(loss, boundary):
    return [dict(epoch=e, train_loss=loss, train_ce=loss, val_loss=loss, test_loss=loss, train_boundary=boundary,
                 train_acc=1.0, val_acc=1.0, test_acc=1.0) for e in (1, 2)]


@pytest.mark.parametrize("loss, boundary", [(0.0, 0.0), (0.5, 0.0), (math.nan, math.nan), (0.5, 1e-3)])
def test_curves_never_warn(tmp_path, loss, boundary):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "no positive values ... log-scaled" would raise
        plots.curves(str(tmp_path / "c.png"), _history(loss, boundary))
    assert (tmp_path / "c.png").stat().st_size > 0

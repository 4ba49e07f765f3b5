"""--model cnn1d: 1-D convolutions for N×C×T data (images read as sequences), trained
by pnn-train and folded for HE (Conv1d, BatchNorm1d, AvgPool1d, AdaptiveAvgPool1d)."""
import numpy as np
import pytest
import torch
from torch import nn

import pnn_ext
from pnn_ext import models
from pnn_ext.he import fold
from pnn_ext.he.fold import Affine, Poly
from pnn_ext.train import build_model, load_run
from pnn_ext.train.cli import main as train_main
from pnn_ext.train.config import TrainConfig
from pnn_ext.train.data import load


def randomize_batchnorm(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 3 + 0.2)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g))
    return model


def test_shapes_and_length_check():
    model = models.CNN1d(6, 4, 9, widths=(8, 16))
    assert model(torch.randn(3, 6, 9)).shape == (3, 4)
    kinds = [type(m) for m in model]
    assert kinds.count(nn.Conv1d) == 2 and kinds.count(nn.AvgPool1d) == 2 and nn.AdaptiveAvgPool1d in kinds
    with pytest.raises(ValueError, match="length >= 4"):
        models.CNN1d(6, 4, 3, widths=(8, 16))


@pytest.mark.parametrize("position", ["before-bn", "after-bn"])
@pytest.mark.parametrize("length", [8, 13])  # an odd length: the pooling floors
def test_folded_cnn1d_matches_plaintext(position, length):
    torch.manual_seed(0)
    model = models.CNN1d(5, 10, length, widths=(6, 8), act_position=position, dropout=0.2)
    models.kaiming_uniform_init(model)
    pnn_ext.convert(model, degree=8)
    randomize_batchnorm(model).eval()
    x = torch.randn(32, 5, length, generator=torch.Generator().manual_seed(1))
    he = fold(model, (5, length))
    with torch.no_grad():
        ref = model.double()(x.double()).numpy()
    np.testing.assert_allclose(he(x.numpy()), ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    assert [type(layer) for layer in he.layers] == [Affine, Poly, Affine, Poly, Affine]  # BN, pools folded


def test_images_become_sequences_for_cnn1d_only():
    """Read row by row: channel c at time t is pixel (row t, column c), up to the per-channel
    normalisation, so each channel is an exact affine image of one pixel column."""
    from pnn_ext.train.data import load_arrays
    seq = load(TrainConfig(dataset="digits", model="cnn1d"))
    assert seq.layout == "sequence" and seq.in_shape == (8, 8)
    assert load(TrainConfig(dataset="digits", model="mlp")).layout == "image"
    raw = torch.as_tensor(load_arrays("digits", "")["x_test"], dtype=torch.float64)  # (N, H, W), fixed split
    x = seq.test.tensors[0].double()                                                # (N, C, T)
    for c in range(1, 7):  # the outer columns are nearly constant
        pair = torch.stack([x[:, c, :].flatten(), raw[:, :, c].flatten()])
        assert torch.corrcoef(pair)[0, 1] > 1 - 1e-6
    cfg = TrainConfig(dataset="digits", model="cnn1d", layout="image")
    with pytest.raises(ValueError, match="cnn1d needs sequences"):
        build_model(cfg, (1, 8, 8), "image", 10)


def test_pnn_train_cnn1d_on_digits_folds(tmp_path):
    out = tmp_path / "c"
    assert train_main(["--dataset", "digits", "--model", "cnn1d", "--degree", "4", "--epochs", "1", "--max-steps",
                       "4", "--no-progress", "--no-plots", "--out-dir", str(out)]) == 0
    run = load_run(str(out))
    assert run.data.layout == "sequence"
    x = run.load_data().test.tensors[0][:16]
    with torch.no_grad():
        ref = run.model.double()(x.double()).numpy()
    np.testing.assert_allclose(fold(run.model, run.data.in_shape)(x.numpy()), ref, rtol=0,
                               atol=1e-9 * np.abs(ref).max())

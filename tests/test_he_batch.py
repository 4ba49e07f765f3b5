"""Batch packing (slot = sample): agreement with the float64 folded model on small
networks (dense and convolutional, push and pull layers), streaming of the inputs,
the client/server split on files (the server cannot decrypt), and pnn-he's one-line
errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import pnn_ext
from pnn_ext import models
from pnn_ext.he import fold
from pnn_ext.he.params import CKKSParams, check, depth, recommend

ts = pytest.importorskip("tenseal")
from pnn_ext.he.batch import BatchRunner, run_batches  # noqa: E402
from pnn_ext.he.engine import Engine  # noqa: E402
from pnn_ext.he.keys import make_context  # noqa: E402


def randomize_batchnorm(model, seed):
    """Non-trivial running statistics and affine parameters, so folding has work to do."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 3 + 0.2)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g))
    return model


def he_model(kind, degree=2, seed=0):
    torch.manual_seed(seed)
    if kind == "cryptonets":
        model = models.CryptoNets(1, 10, (8, 8), hidden=20)
    else:
        model = models.MLP(64, 10, kind)
    models.kaiming_uniform_init(model)
    pnn_ext.convert(model, degree=degree)
    return fold(randomize_batchnorm(model, seed).eval(), (1, 8, 8))


def inputs(n, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 1, 8, 8))


@pytest.mark.parametrize("kind", ["cryptonets", (16, 8), (8, 16)])
def test_batch_agrees_with_plaintext(kind):
    """cryptonets: a folded convolution (sparse) then push; (16, 8) push; (8, 16) a wider layer: pull."""
    he = he_model(kind)
    params = recommend(he, packing="batch")
    assert params.poly_modulus_degree == 16384 and params.levels == depth(he) == 7
    engine = Engine(make_context(params))
    x = inputs(200)
    out = run_batches(BatchRunner(he, engine), x.reshape(200, -1), 128)    # 2 batches, the last partial
    plain = he(x)
    assert out["logits"].shape == plain.shape and len(out["batches"]) == 2
    err = np.abs(out["logits"] - plain).max()
    assert err < 1e-4 * max(1.0, np.abs(plain).max()), err
    assert (out["logits"].argmax(1) == plain.argmax(1)).all()
    if kind == "cryptonets":     # 25 or fewer non-zero weights per conv output, and only those multiplied
        w = he.layers[0].weight
        assert w.shape == (45, 64) and (np.count_nonzero(w, axis=1) <= 25).all()
        per_batch = sum(np.count_nonzero(a.weight) for a in he.layers[::2])
        polys = 45 + 20                            # each degree-2 polynomial: 2 plaintext products (c1 T1 + c2 T2)
        assert engine.counts["plain_mult"] == 2 * (per_batch + 2 * polys)


def test_inputs_are_fetched_once():
    """The first layer pulls each input it uses exactly once (each is encrypted or loaded once and
    dropped after its last use)."""
    he = he_model("cryptonets")
    engine = Engine(make_context(recommend(he, packing="batch")))
    x = inputs(4).reshape(4, -1)
    fetched = []
    runner = BatchRunner(he, engine)

    def get(i):
        fetched.append(i)
        return engine.encrypt(x[:, i])
    logits = [np.array(engine.decrypt(ct, 4)) for ct in runner.run(get)]
    assert sorted(fetched) == sorted(set(fetched)) and len(fetched) == np.count_nonzero(he.layers[0].weight.any(0))
    np.testing.assert_allclose(np.stack(logits, 1), he(x.reshape(4, 1, 8, 8)), atol=1e-4)


def test_parameters_for_batch_packing():
    """Batch packing needs the depth and security, not the width: slot = sample."""
    from pnn_ext.he.fold import Affine, HEModel
    he = he_model((16, 8))
    with pytest.raises(pnn_ext.he.HEParameterError, match="too small for the depth"):
        check(he, CKKSParams(16384, [60, 40, 40, 60], 40), "batch")
    wide = HEModel([Affine(np.ones((10, 8200)), np.zeros(10))], (8200,))
    assert recommend(wide).poly_modulus_degree == 32768
    assert recommend(wide, packing="batch").poly_modulus_degree == 8192
    check(wide, CKKSParams(8192, [60, 40, 60], 40), "batch")
    with pytest.raises(pnn_ext.he.HEParameterError, match="more than the 4096 slots"):
        check(wide, CKKSParams(8192, [60, 40, 60], 40), "sample")


# ---------------------------------------------------------------- the client/server split, on files

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from pnn_ext.train import TrainConfig, train
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(dataset="digits", model="mlp", hidden="16", degree=2, epochs=2, batch_size=64,
                      progress=False, plots=False, out_dir=str(out)))
    return str(out / "best.pt")


def he(argv, capsys):
    from pnn_ext.he.cli import main
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_client_server_split(checkpoint, tmp_path, capsys):
    d = str(tmp_path)
    assert he(["fold", checkpoint, "--out", f"{d}/m.npz", "--inputs-out", f"{d}/x.npy", "--samples", "50"],
              capsys)[0] == 0
    rc, out, _ = he(["keygen", f"{d}/m.npz", "--out-dir", f"{d}/keys"], capsys)
    assert rc == 0 and json.loads(out)["poly_modulus_degree"] == 16384
    assert he(["encrypt", "--context", f"{d}/keys/secret.ctx", "--inputs", f"{d}/x.npy", "--out", f"{d}/x.ct"],
              capsys)[0] == 0
    rc, out, err = he(["infer", "--context", f"{d}/keys/public.ctx", "--model", f"{d}/m.npz", "--in", f"{d}/x.ct",
                       "--out", f"{d}/l.ct"], capsys)
    assert rc == 0 and "warning" not in err
    assert he(["decrypt", "--context", f"{d}/keys/secret.ctx", "--in", f"{d}/l.ct", "--out", f"{d}/l.npy"],
              capsys)[0] == 0
    from pnn_ext.he.fold import HEModel
    model, x, logits = HEModel.load(f"{d}/m.npz"), np.load(f"{d}/x.npy"), np.load(f"{d}/l.npy")
    assert logits.shape == (50, 10)
    assert np.abs(logits - model(x)).max() < 1e-4 and (logits.argmax(1) == model(x).argmax(1)).all()

    # The server's context has no secret key: it cannot decrypt, by any route.
    from pnn_ext.he.ciphertexts import LOGITS, CiphertextReader
    from pnn_ext.he.keys import Keys
    keys = Keys(f"{d}/keys/public.ctx", need_secret=False)
    server = keys.ctx
    assert server.is_public() and not server.has_secret_key()
    with pytest.raises(ValueError, match="doesn't hold a Secret key"):
        server.secret_key()
    engine = Engine(server)
    reader = CiphertextReader(f"{d}/l.ct", LOGITS, engine, keys)
    with pytest.raises(ValueError, match="no secret key"):
        engine.decrypt(reader[0], 50)
    reader.close()
    vec = ts.ckks_vector(server, [1.0, 2.0])                       # encrypting with the public key works
    with pytest.raises(ValueError, match="secret"):
        vec.decrypt()
    rc, _, err = he(["decrypt", "--context", f"{d}/keys/public.ctx", "--in", f"{d}/l.ct", "--out", f"{d}/z.npy"],
                    capsys)
    assert rc == 2 and "holds no secret key" in err


def test_batch_mode_command(checkpoint, tmp_path, capsys):
    import glob
    import tempfile
    scratch = set(glob.glob(f"{tempfile.gettempdir()}/pnn-he-*.ct"))
    rc, out, _ = he([checkpoint, "--packing", "batch", "--samples", "100", "--batch-size", "64", "--fill",
                     "--json", str(tmp_path / "r.json")], capsys)
    assert rc == 0 and "agreement with plaintext 100.00%" in out
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["predictions"] == 128 and r["batches"] == 2 and r["agreement"] == 1.0 and r["depth"] == 4
    assert r["public_context_bytes"] > 0 and r["seeded_ciphertext_bytes"] < r["ciphertext_bytes"]
    assert set(glob.glob(f"{tempfile.gettempdir()}/pnn-he-*.ct")) <= scratch      # scratch files removed


BAD = [
    (["{missing}"], "does not exist"),
    (["{corrupt}"], "checkpoint"),
    (["{ckpt}", "--samples", "0"], "--samples must be >= 1"),
    (["{ckpt}", "--batch", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["{ckpt}", "--batch", "--batch-size", "9000"], "more than the 8192 slots"),
    (["{ckpt}", "--fill"], "apply to --packing batch"),
    (["{ckpt}", "--scale-bits", "99"], "--scale-bits must be in"),
    (["{ckpt}", "--poly-modulus-degree", "1000"], "--poly-modulus-degree must be one of"),
    (["{ckpt}", "--coeff-mod-bit-sizes", "60,x,60"], "comma-separated integers"),
    (["{ckpt}", "--coeff-mod-bit-sizes", "60,40,60", "--poly-modulus-degree", "8192"], "too small for the depth"),
    (["{ckpt}", "--batch", "--json", "{tmp}/no/such/dir/r.json"], "does not exist"),
    (["{ckpt}", "--packing", "rows"], "invalid choice"),
    (["keygen", "{tmp}/nothing.npz", "--out-dir", "{tmp}/k"], "does not exist"),
    (["keygen", "{corrupt}", "--out-dir", "{tmp}/k"], "not a folded model"),
    (["infer", "--context", "{corrupt}", "--model", "m", "--in", "x", "--out", "{tmp}/y"], "not a pnn-he key file"),
    (["encrypt", "--context", "{tmp}/none.ctx", "--inputs", "x", "--out", "{tmp}/y"], "cannot read key"),
    (["decrypt"], "required"),
]


def test_one_line_errors(checkpoint, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    fill = {"missing": str(tmp_path / "missing.pt"), "corrupt": str(corrupt), "ckpt": checkpoint,
            "tmp": str(tmp_path)}
    for argv, message in BAD:
        argv = [a.format(**fill) for a in argv]
        rc, out, err = he(argv, capsys)
        assert rc == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pnn-he: error: ") and message in lines[0], (argv, err)
    assert not (tmp_path / "no").exists() and not (tmp_path / "k").exists()     # nothing made on a mistake


def test_one_line_error_in_a_subprocess(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pnn_ext.he", str(tmp_path / "missing.pt"), "--batch"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().count("\n") == 0 and p.stderr.startswith("pnn-he: error: ")

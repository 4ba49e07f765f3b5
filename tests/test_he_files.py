"""pnn-he's files are bound to their keys and model and checked on every read, and
encrypt compares the inputs with the model's input range: a ciphertext made with other
keys, decryption with another secret key, flipped bits, an edited header, an edited
model, an output over an input, keys made again into a key directory, inputs outside the
trained range — each refused with one line and exit code 2, in a process of its own
(tests/forkserver.py), the files the commands read left untouched. One set of files,
two keys, made once for all the cases (key generation is the slow part)."""
import json
import os
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from testing import ROOT

pytest.importorskip("tenseal")


def he(*argv):
    """pnn-he in this process (building the files): its JSON report, or an assertion naming the error."""
    import contextlib
    import io

    from pnn_ext.he.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    assert rc == 0, (argv, err.getvalue())
    return json.loads(out.getvalue())


def flip(src, dst, offset, bit=0x10):
    blob = bytearray(open(src, "rb").read())
    blob[offset] ^= bit
    open(dst, "wb").write(bytes(blob))


def edit_header(src, dst, old: bytes, new: bytes):
    """Replace ``old`` by ``new`` in the header, with the header length fixed up (the digest is not)."""
    from pnn_ext.he.sealed_file import MAGIC
    blob = open(src, "rb").read()
    (n,) = struct.unpack("<Q", blob[len(MAGIC):len(MAGIC) + 8])
    head = blob[len(MAGIC) + 8:len(MAGIC) + 8 + n]
    assert old in head
    head = head.replace(old, new, 1)
    open(dst, "wb").write(MAGIC + struct.pack("<Q", len(head)) + head + blob[len(MAGIC) + 8 + n:])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from pnn_ext.he import HEModel
    from pnn_ext.train import TrainConfig, train
    tmp = tmp_path_factory.mktemp("he_files")
    train(TrainConfig(dataset="digits", model="mlp", hidden="16", degree=2, epochs=1, batch_size=64,
                      progress=False, plots=False, out_dir=str(tmp / "run")))
    f = tmp / "F"                           # what the cases read; its digest must not change
    f.mkdir()
    folded = he("fold", tmp / "run" / "best.pt", "--out", f / "m.npz", "--inputs-out", f / "x.npy", "--samples", 20)
    he("keygen", f / "m.npz", "--out-dir", f / "keysA")
    he("keygen", f / "m.npz", "--out-dir", f / "keysB")
    he("encrypt", "--context", f / "keysA" / "secret.ctx", "--inputs", f / "x.npy", "--out", f / "xA.ct")
    he("infer", "--context", f / "keysA" / "public.ctx", "--model", f / "m.npz", "--in", f / "xA.ct",
       "--out", f / "lA.ct")
    x = np.load(f / "x.npy")
    np.save(f / "x50.npy", x * 50)                                      # the 50x-scale inputs
    np.save(f / "x_narrow.npy", x.reshape(len(x), -1)[:, :10])
    size = os.path.getsize(f / "xA.ct")
    for name, offset in (("header", 20), ("body", size // 3), ("end", size - 40), ("digest", size - 1)):
        flip(f / "xA.ct", f / f"flip_{name}.ct", offset)
    flip(f / "lA.ct", f / "flip_logits.ct", os.path.getsize(f / "lA.ct") // 2)
    flip(f / "keysA" / "secret.ctx", f / "flip_secret.ctx", os.path.getsize(f / "keysA" / "secret.ctx") // 2)
    edit_header(f / "xA.ct", f / "samples_19.ct", b'"samples": 20', b'"samples": 19')
    edit_header(f / "xA.ct", f / "samples_5.ct", b'"samples": 20', b'"samples": 5')
    old = bytearray(open(f / "xA.ct", "rb").read())
    old[:8] = b"PNNHE-CT"                                               # the previous format's magic
    open(f / "old_format.ct", "wb").write(bytes(old))
    model = HEModel.load(str(f / "m.npz"))
    model.layers[0].weight[0, 0] += 0.5
    model.export(str(tmp / "m2.npz"))                                   # another model, intact
    shutil.copy(tmp / "m2.npz", f / "m2.npz")
    model.input_range = None                                            # folded without its training inputs
    model.export(str(f / "m_norange.npz"))
    he("keygen", f / "m_norange.npz", "--out-dir", f / "keysN")
    z = dict(np.load(f / "m.npz"))
    z["layer0_weight"] = model.layers[0].weight                         # the same model id, edited weights
    np.savez(f / "m_edited.npz", **z)
    return {"tmp": tmp, "F": f, "folded": folded}


# (id, argv with {F} and {OUT}, regex of the one error line); every one exits 2
CASES = [
    ("infer-other-key", ["infer", "--context", "{F}/keysB/public.ctx", "--model", "{F}/m.npz", "--in", "{F}/xA.ct",
                         "--out", "{OUT}/l.ct"], r"xA\.ct was made under key [0-9a-f]{16}, .*keysB/public\.ctx is key"),
    ("decrypt-other-key", ["decrypt", "--context", "{F}/keysB/secret.ctx", "--in", "{F}/lA.ct", "--out", "{OUT}/l.npy"],
     r"lA\.ct was made under key .*use the keys it was made with"),
    ("decrypt-inputs", ["decrypt", "--context", "{F}/keysA/secret.ctx", "--in", "{F}/xA.ct", "--out", "{OUT}/l.npy"],
     r"xA\.ct holds inputs, not logits"),
    *[(f"flip-{w}", ["infer", "--context", "{F}/keysA/public.ctx", "--model", "{F}/m.npz", "--in", f"{{F}}/flip_{w}.ct",
                     "--out", "{OUT}/l.ct"], rf"flip_{w}\.ct is damaged or was edited: its SHA-256 digest")
      for w in ("header", "body", "end", "digest")],
    ("flip-logits", ["decrypt", "--context", "{F}/keysA/secret.ctx", "--in", "{F}/flip_logits.ct", "--out",
                     "{OUT}/l.npy"], r"flip_logits\.ct is damaged or was edited"),
    ("flip-secret-key", ["encrypt", "--context", "{F}/flip_secret.ctx", "--inputs", "{F}/x.npy", "--out",
                         "{OUT}/x.ct"], r"flip_secret\.ctx is damaged or was edited"),
    ("edited-samples", ["infer", "--context", "{F}/keysA/public.ctx", "--model", "{F}/m.npz", "--in",
                        "{F}/samples_19.ct", "--out", "{OUT}/l.ct"], r"samples_19\.ct is damaged or was edited"),
    ("edited-samples-length", ["infer", "--context", "{F}/keysA/public.ctx", "--model", "{F}/m.npz", "--in",
                               "{F}/samples_5.ct", "--out", "{OUT}/l.ct"], r"samples_5\.ct is damaged or was edited"),
    ("old-format", ["infer", "--context", "{F}/keysA/public.ctx", "--model", "{F}/m.npz", "--in", "{F}/old_format.ct",
                    "--out", "{OUT}/l.ct"], r"old_format\.ct is not a pnn-he ciphertext file"),
    ("edited-model", ["infer", "--context", "{F}/keysA/public.ctx", "--model", "{F}/m_edited.npz", "--in",
                      "{F}/xA.ct", "--out", "{OUT}/l.ct"], r"m_edited\.npz is damaged or was edited: its model id"),
    ("keys-for-another-model", ["infer", "--context", "{F}/keysA/public.ctx", "--model", "{F}/m2.npz", "--in",
                                "{F}/xA.ct", "--out", "{OUT}/l.ct"],
     r"keysA/public\.ctx was made for model [0-9a-f]{16}, --model .*m2\.npz is model"),
    ("public-key-encrypts", ["encrypt", "--context", "{F}/keysA/public.ctx", "--inputs", "{F}/x.npy", "--out",
                             "{OUT}/x.ct"], r"holds no secret key"),
    ("infer-out-is-in", ["infer", "--context", "{F}/keysA/public.ctx", "--model", "{F}/m.npz", "--in", "{F}/xA.ct",
                         "--out", "{F}/xA.ct"], r"--out .*xA\.ct is also an input of this command"),
    ("encrypt-out-is-inputs", ["encrypt", "--context", "{F}/keysA/secret.ctx", "--inputs", "{F}/x.npy", "--out",
                               "{F}/x.npy"], r"--out .*x\.npy is also an input"),
    ("encrypt-out-is-key", ["encrypt", "--context", "{F}/keysA/secret.ctx", "--inputs", "{F}/x.npy", "--out",
                            "{F}/keysA/../keysA/secret.ctx"], r"is also an input"),
    ("decrypt-out-without-npy", ["decrypt", "--context", "{F}/keysA/secret.ctx", "--in", "{F}/lA.ct", "--out",
                                 "{OUT}/logits"], r"--out .*logits must end in \.npy"),
    ("keygen-existing-keys", ["keygen", "{F}/m.npz", "--out-dir", "{F}/keysA"],
     r"keysA already holds keys \(secret\.ctx, public\.ctx, params\.json\).*--overwrite"),
    ("keygen-out-dir-is-file", ["keygen", "{F}/m.npz", "--out-dir", "{F}/x.npy"], r"exists and is not a directory"),
    ("inputs-50x", ["encrypt", "--context", "{F}/keysA/secret.ctx", "--inputs", "{F}/x50.npy", "--out", "{OUT}/x.ct"],
     r"20 of 20 samples have values outside the range the model was trained on .*--allow-out-of-range"),
    ("no-recorded-range", ["encrypt", "--context", "{F}/keysN/secret.ctx", "--inputs", "{F}/x.npy", "--out",
                           "{OUT}/x.ct"], r"records no input range .*--allow-out-of-range to encrypt them unchecked"),
    ("inputs-other-width", ["encrypt", "--context", "{F}/keysA/secret.ctx", "--inputs", "{F}/x_narrow.npy", "--out",
                            "{OUT}/x.ct"], r"10 features per sample; the model takes 64"),
]


@pytest.fixture(scope="module")
def results(files):
    """Every case (and the overridden range check), each in a process forked from tests/forkserver.py."""
    from forkserver import tree_digest
    out = files["tmp"] / "out"
    out.mkdir()
    allowed = ["encrypt", "--context", "{F}/keysA/secret.ctx", "--inputs", "{F}/x50.npy", "--out", "{OUT}/x50.ct",
               "--allow-out-of-range"]
    cases = [{"module": "pnn_ext.he.cli", "argv": [a.format(F=files["F"], OUT=out) for a in argv],
              "watch": str(files["F"])} for argv in [c[1] for c in CASES] + [allowed]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "forkserver.py")],
                       input="".join(json.dumps(c) + "\n" for c in cases), capture_output=True, text=True,
                       cwd=str(files["tmp"]), env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rs = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(rs) == len(cases)
    return {"digest": tree_digest(str(files["F"])), "cases": dict(zip([c[0] for c in CASES] + ["allowed"], rs)),
            "out": out}


@pytest.mark.parametrize("cid,argv,pattern", CASES, ids=[c[0] for c in CASES])
def test_refused_with_one_line(results, cid, argv, pattern):
    r = results["cases"][cid]
    assert "Traceback" not in r["stderr"], r["stderr"][-3000:]
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
    assert r["rc"] == 2 and len(lines) == 1, (r["rc"], lines)
    assert lines[0].startswith("pnn-he: error: ") and re.search(pattern, lines[0]), lines[0]
    assert r["watch"] == results["digest"], "a refused command changed the files it read"


def test_out_of_range_inputs_encrypt_with_a_warning_when_allowed(results):
    r = results["cases"]["allowed"]
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
    assert r["rc"] == 0 and len(lines) == 1 and lines[0].startswith("pnn-he: warning: inputs "), r["stderr"]
    assert "20 of 20 samples have values outside" in lines[0]
    assert json.loads(r["stdout"])["samples_out_of_range"] == 20
    assert os.listdir(results["out"]) == ["x50.ct"]      # the only output: the refused cases wrote nothing


def test_fold_records_the_training_range(files):
    r = files["folded"]["input_range"]
    from pnn_ext.train import load_run
    x = load_run(str(files["tmp"] / "run" / "best.pt")).load_data().train.tensors[0].numpy()
    assert r == {"low": float(x.min()), "high": float(x.max()), "samples": len(x)}
    # the test inputs (same distribution) are inside: nothing refused on ordinary data
    from pnn_ext.he import HEModel
    model = HEModel.load(str(files["F"] / "m.npz"))
    assert not model.input_range.outside(np.load(files["F"] / "x.npy")).any()


def test_keygen_overwrite_replaces_the_keys(files):
    """--overwrite makes new keys: the old ciphertexts are then refused, not decrypted to garbage."""
    from pnn_ext.he.cli import main
    keys = files["tmp"] / "keysC"
    shutil.copytree(files["F"] / "keysA", keys)
    before = json.loads((keys / "params.json").read_text())["key_fingerprint"]
    after = he("keygen", files["F"] / "m.npz", "--out-dir", keys, "--overwrite")["key_fingerprint"]
    assert after != before and json.loads((keys / "params.json").read_text())["key_fingerprint"] == after
    assert main(["decrypt", "--context", str(keys / "secret.ctx"), "--in", str(files["F"] / "lA.ct"),
                 "--out", str(files["tmp"] / "l.npy")]) == 2

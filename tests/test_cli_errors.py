"""Bad invocations as a user makes them: pnn-train, pnn-ablate, pnn-sweep and pnn-he command lines
and calls of the op and its modules, each in a process of its own (forked from
tests/forkserver.py, which imports torch once, so that the ~150 cases take seconds).

Every command-line case must end with its exit code (2 for a user's mistake), one line on
stderr that names the problem, no traceback, and the finished run in RUN byte-identical
(most cases point --out-dir at it with --overwrite or --resume). Every op case must raise
an error naming the problem in one line, or give the correct result. A few cases also
run as real ``python -m`` processes, to show the fork server changes nothing.
Over 400 lines: the case tables are most of it, and one table per command reads better
than the cases spread over files."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from testing import QUICK, ROOT

RUN_ARGS = ["--model", "mlp", "--hidden", "16", "--degree", "2", "--batch-size", "64", "--no-progress", "--no-plots"]
cuda = torch.cuda.is_available()

# (id, argv with {placeholders}, exit code, what the one error line must say)
TRAIN = [
    ("degree-129", ["--degree", "129"], 2, r"degree must be an integer from 1 to 128, got 129"),
    ("degree-0", ["--degree", "0"], 2, r"degree must be an integer from 1 to 128"),
    ("degree-negative", ["--degree", "-3"], 2, r"degree must be an integer from 1 to 128"),
    ("degree-bool", ["--degree", "true"], 2, r"degree must be int"),
    ("degree-float", ["--degree", "2.5"], 2, r"degree must be int"),
    ("lr-zero", ["--lr", "0"], 2, r"lr must be > 0"),
    ("lr-negative", ["--lr", "-1"], 2, r"lr must be > 0"),
    ("lr-nan", ["--lr", "nan"], 2, r"lr must be a finite number"),
    ("lr-inf", ["--lr", "inf"], 2, r"lr must be a finite number"),
    ("lr-text", ["--lr", "fast"], 2, r"lr must be float"),
    ("batch-size-zero", ["--batch-size", "0"], 2, r"batch_size must be > 0"),
    ("epochs-negative", ["--epochs", "-1"], 2, r"epochs must be >= 0"),
    ("val-fraction-one", ["--val-fraction", "1"], 2, r"val_fraction must be in \[0, 1\)"),
    ("val-fraction-negative", ["--val-fraction", "-0.1"], 2, r"val_fraction must be in"),
    ("dropout-high", ["--dropout", "1.5"], 2, r"dropout must be in"),
    ("bound-zero", ["--bound", "0"], 2, r"bound must be a number > 0 or auto, got 0"),
    ("bound-negative", ["--bound", "-5"], 2, r"bound must be a number > 0 or auto, got -5"),
    ("bound-nan", ["--bound", "nan"], 2, r"bound must be a number > 0 or auto, got nan"),
    ("bound-word", ["--bound", "automatic"], 2, r"bound must be a number > 0 or auto, got 'automatic'"),
    ("alpha-zero", ["--alpha", "0"], 2, r"alpha must be > 0"),
    ("lam-negative", ["--lam", "-1"], 2, r"lam must be >= 0"),
    ("weight-decay-negative", ["--weight-decay", "-1"], 2, r"weight_decay must be >= 0"),
    ("clip-norm-zero", ["--clip-norm", "0"], 2, r"clip_norm must be > 0"),
    ("plateau-factor-high", ["--plateau-factor", "1.5"], 2, r"plateau_factor must be < 1"),
    ("plateau-factor-zero", ["--plateau-factor", "0"], 2, r"plateau_factor must be > 0"),
    ("seed-negative", ["--seed", "-1"], 2, r"seed must be in 0\.\.2\*\*32-1"),
    ("seed-huge", ["--seed", "99999999999"], 2, r"seed must be in"),
    ("num-classes-negative", ["--num-classes", "-1"], 2, r"num_classes must be >= 0"),
    ("model-unknown", ["--model", "vgg"], 2, r"model must be one of"),
    ("model-torchvision-unknown", ["--model", "torchvision:nonexistent"], 2, r"torchvision:nonexistent"),
    ("activation-unknown", ["--activation", "tanh"], 2, r"argument --activation: invalid choice"),
    ("norm-unknown", ["--norm", "layer"], 2, r"argument --norm: invalid choice"),
    ("hidden-zero", ["--model", "mlp", "--hidden", "0,5"], 2, r"hidden must be comma-separated positive"),
    ("hidden-text", ["--model", "mlp", "--hidden", "a,b"], 2, r"hidden must be comma-separated positive"),
    ("unknown-flag", ["--learning-rate", "0.1"], 2, r"unrecognized arguments: --learning-rate"),
    ("missing-value", ["--epochs"], 2, r"argument --epochs: expected one argument"),
    ("resume-and-overwrite", ["--resume", "last"], 2, r"resume and overwrite exclude each other"),
    ("batch-of-one", ["--batch-size", "1"], 2, r"cannot train on this data.*batch_size 1.*Expected more than 1 value"),
    ("calibrate-samples-one", ["--model", "mlp", "--bound", "auto", "--calibrate-samples", "1"], 2,
     r"--bound auto: the calibration pass on 1 training sample\(s\) cannot run: BatchNorm .*--calibrate-samples 2 or"),
    ("image-too-small", ["--dataset", "npz:{DATA}/tiny_images.npz"], 2, r"small-cnn needs images of at least 4x4"),
    ("features-into-cnn", ["--dataset", "npz:{DATA}/features.npz"], 2, r"needs images"),
    ("dataset-unknown", ["--dataset", "imagenet"], 2, r"dataset must be digits, mnist"),
    ("npz-missing", ["--dataset", "npz:{DATA}/missing.npz"], 2, r"npz file .*missing\.npz.* does not exist"),
    ("npz-garbage", ["--dataset", "npz:{DATA}/garbage.npz"], 2, r"cannot read npz file"),
    ("npz-pickled", ["--dataset", "npz:{DATA}/pickled.npz"], 2, r"cannot read npz file"),
    ("npz-missing-keys", ["--dataset", "npz:{DATA}/nokeys.npz"], 2, r"lacks keys \['y_test'\]"),
    ("stray-label", ["--dataset", "npz:{DATA}/stray.npz"], 2, r"class 3 has none.*255 \(1 in y_train\)"),
    ("label-past-num-classes", ["--dataset", "npz:{DATA}/features.npz", "--model", "mlp", "--num-classes", "2"], 2,
     r"labels must be 0\.\.1 \(num_classes 2\); found 2 \(\d+ in y_train"),
    ("negative-label", ["--dataset", "npz:{DATA}/negative.npz"], 2, r"negative label \(-1\)"),
    ("fractional-label", ["--dataset", "npz:{DATA}/fraction.npz"], 2, r"integer class indices"),
    ("label-count", ["--dataset", "npz:{DATA}/count.npz"], 2, r"y_train has 39 labels but x_train has 40"),
    ("complex-inputs", ["--dataset", "npz:{DATA}/complex.npz"], 2, r"x_train is complex"),
    ("float32-overflow", ["--dataset", "npz:{DATA}/huge.npz"], 2,
     r"x_train overflows in the cast to float32: its largest magnitude 3\.\d+e\+300 is beyond"),
    ("nan-inputs", ["--dataset", "npz:{DATA}/nan.npz"], 2, r"x_test contains NaN or inf \(1 values\)"),
    ("empty-test-set", ["--dataset", "npz:{DATA}/notest.npz"], 2, r"x_test has no samples"),
    ("five-dim-inputs", ["--dataset", "npz:{DATA}/fivedim.npz"], 2, r"x_train must be N×C×H×W"),
    ("idx-damaged-deflate", ["--dataset", "mnist", "--data-dir", "{DATA}/idx"], 2,
     r"cannot read idx file .*train-images-idx3-ubyte\.gz: error: Error -3"),
    ("config-missing", ["--config", "{DATA}/missing.yaml"], 2, r"config file .* does not exist"),
    ("config-yaml-syntax", ["--config", "{DATA}/bad.yaml"], 2, r"is not valid YAML"),
    ("config-json-syntax", ["--config", "{DATA}/bad.json"], 2, r"is not valid JSON"),
    ("config-not-mapping", ["--config", "{DATA}/list.yaml"], 2, r"must hold a mapping of settings, got list"),
    ("config-unknown-key", ["--config", "{DATA}/unknown.yaml"], 2, r"unknown setting 'learning_rate'"),
    ("config-degree", ["--config", "{DATA}/degree.yaml"], 2, r"degree must be an integer from 1 to 128, got 300"),
    ("config-lr-text", ["--config", "{DATA}/lr.yaml"], 2, r"lr must be float, got 'fast'"),
    ("config-binary", ["--config", "{DATA}/binary.yaml"], 2, r"cannot be read"),
]
# Cases that need their own --out-dir (the others get --out-dir RUN --overwrite).
TRAIN_OWN_DIR = [
    ("out-dir-proc", ["--out-dir", "/proc/pnn-train-run"], 2, r"out_dir '/proc/pnn-train-run' cannot be written"),
    ("out-dir-is-file", ["--out-dir", "{DATA}/a_file"], 2, r"exists and is not a directory"),
    ("existing-run", ["--out-dir", "{RUN}"], 2, r"already holds a run .*--resume last.*--overwrite"),
    ("allow-changes-alone", ["--out-dir", "{RUN}", "--overwrite", "--allow-changes"], 2,
     r"allow_changes is for --resume"),
    ("resume-changed-lr", ["--out-dir", "{RUN}", "--resume", "last", *RUN_ARGS, "--lr", "0.5"], 2,
     r"settings that differ from its run: lr 0\.001 -> 0\.5; pass --allow-changes"),
    ("resume-changed-two", ["--out-dir", "{RUN}", "--resume", "last", *RUN_ARGS, "--lam", "10", "--bound", "9"], 2,
     r"bound None -> 9\.0, lam 1000\.0 -> 10\.0"),
    ("resume-other-degree", ["--out-dir", "{RUN}", "--resume", "last", *RUN_ARGS, "--degree", "8"], 2,
     r"was made with degree=2, this run has degree=8"),
    ("resume-other-classes", ["--out-dir", "{RUN}", "--resume", "last", *RUN_ARGS, "--num-classes", "12"], 2,
     r"num_classes=0, this run has num_classes=12"),
    ("resume-missing-file", ["--out-dir", "{DATA}/fresh", "--resume", "{DATA}/missing.pt"], 2,
     r"checkpoint .*missing\.pt.* to resume does not exist"),
    ("resume-corrupt-data", ["--out-dir", "{CORRUPT}", "--resume", "last", *RUN_ARGS], 2,
     r"is corrupted: the digest written with it does not match the model's tensor data\. Other checkpoints in its "
     r"directory: best\.pt \(intact, epoch 1\)"),
    ("resume-truncated", ["--out-dir", "{TRUNCATED}", "--resume", "last", *RUN_ARGS], 2,
     r"truncated or corrupted.*best\.pt \(intact"),
    ("resume-not-a-checkpoint", ["--out-dir", "{DATA}/fresh", "--resume", "{DATA}/bad.yaml", *RUN_ARGS], 2,
     r"truncated or corrupted"),
    ("resume-nonfinite", ["--out-dir", "{NONFINITE}", "--resume", "last", *RUN_ARGS], 2, r"holds non-finite values"),
    pytest.param("device-cuda", ["--out-dir", "{RUN}", "--overwrite", "--device", "cuda"], 2,
                 r"device cuda was requested but torch sees no CUDA device",
                 marks=pytest.mark.skipif(cuda, reason="needs a machine without CUDA")),
    pytest.param("bf16-on-cpu", ["--out-dir", "{RUN}", "--overwrite", "--bf16", "--device", "cpu"], 2,
                 r"bf16 and channels_last are for CUDA runs", marks=[]),
]
ABLATE = [
    ("degrees-129", ["--degrees", "8,129"], 2, r"argument --degrees: degree must be an integer from 1 to 128"),
    ("degrees-zero", ["--degrees", "0"], 2, r"degree must be an integer from 1 to 128, got 0"),
    ("degrees-text", ["--degrees", "eight"], 2, r"argument --degrees: must be comma-separated integers"),
    ("degrees-empty", ["--degrees", ","], 2, r"must list at least one integer"),
    ("seeds-negative", ["--seeds", "-1"], 2, r"seeds must be in 0\.\.2\*\*32-1"),
    ("variants-unknown", ["--variants", "full,bogus"], 2, r"unknown variants \['bogus'\]"),
    ("own-flag", ["--", "--out-dir", "x"], 2, r"must not include \['--out-dir'\]"),
    ("train-bad-value", ["--", "--lr", "-1"], 2, r"pnn-train arguments after --: lr must be > 0"),
    ("train-unknown-flag", ["--", "--nope"], 2, r"pnn-train arguments after --: unrecognized arguments: --nope"),
    ("train-bad-type", ["--", "--epochs", "two"], 2, r"epochs must be int, got 'two'"),
    ("unknown-flag", ["--nope"], 2, r"unrecognized arguments: --nope"),
    ("out-dir-is-file", ["--out-dir", "{DATA}/a_file"], 2, r"exists and is not a directory"),
    ("missing-data", ["--degrees", "2", "--seeds", "0", "--variants", "full", "--", "--dataset",
                      "npz:{DATA}/missing.npz"], 2, r"does not exist"),
]
# pnn-sweep: every case but the last four runs into {SWEEP}, a finished one-cell sweep (lr=1e-3,
# full, seed 0, made with SWEEP_TRAIN), and must leave its runs and its report byte-identical.
SWEEP_TRAIN = ["--", "--model", "mlp", "--hidden", "16", "--degree", "2", "--epochs", "1", "--max-steps", "1"]
SWEEP = [
    ("grid-degree-zero", ["--grid", "degree=0,2"], 2, r"--grid degree=0: degree must be an integer from 1 to 128"),
    ("grid-scheduler-bogus", ["--grid", "scheduler=bogus"], 2,
     r"--grid scheduler=bogus: argument --scheduler: invalid choice: 'bogus'"),
    ("grid-bound-negative", ["--grid", "bound=-5"], 2, r"--grid bound=-5: bound must be a number > 0 or auto"),
    ("grid-bool-bad", ["--grid", "learnable=maybe"], 2, r"--grid learnable: 'maybe' is not a valid value"),
    ("grid-combination", ["--grid", "replace=all,progressive", "--grid", "epochs=3,1", "--", "--replace-epochs", "2"],
     2, r"cell replace=progressive/epochs=1/full/seed0: replace_epochs \(2\) must not exceed epochs \(1\)"),
    ("train-unknown-flag", ["--", "--nope"], 2, r"pnn-train arguments after --: unrecognized arguments: --nope"),
    ("train-bad-value", ["--", "--lr", "-1"], 2, r"cell full/seed0: lr must be > 0"),
    ("train-own-flag", ["--", "--seed", "3"], 2, r"after -- must not set \['seed'\]: pnn-sweep sets them"),
    ("train-variant-flag", ["--", "--clip", "none"], 2, r"set \['clip'\], which the variant full sets itself"),
    ("grid-variant-flag", ["--grid", "clip=none,all"], 2, r"--grid clip: the variants \[.*\] set clip themselves"),
    ("grid-and-train-flag", ["--grid", "lr=1e-3", "--", "--lr", "0.1"], 2,
     r"--grid lr and the arguments after -- both set lr"),
    ("grid-same-value", ["--grid", "lr=1e-3,0.001"], 2,
     r"cells lr=1e-3/full/seed0 and lr=0\.001/full/seed0 are one run"),
    ("grid-same-bool", ["--grid", "learnable=true,yes"], 2,
     r"cells learnable=true/.* and learnable=yes/.* are one run"),
    ("grid-no-effect", ["--grid", "plots=true,false"], 2, r"are one run"),
    ("seeds-empty", ["--seeds", ","], 2, r"argument --seeds: must list at least one seed"),
    ("seeds-twice", ["--seeds", "0,1,0"], 2, r"seeds \[0\] are listed twice"),
    ("variants-twice", ["--variants", "full,no-clip,full"], 2, r"--variants lists \['full'\] twice"),
    ("variants-empty", ["--variants", ","], 2, r"unknown variants"),
    ("jobs-zero", ["--jobs", "0"], 2, r"argument --jobs: must be >= 1"),
    ("report-dir-is-file", ["--report-dir", "{DATA}/a_file"], 2, r"report-dir .*a_file' exists and is not a directory"),
    ("other-settings", ["--grid", "lr=1e-3", "--variants", "full", "--seeds", "0", *SWEEP_TRAIN[:-1], "2"], 2,
     r"cell lr=1e-3/full/seed0 in .* holds a run made with other settings \(max_steps 1 -> 2\); pass --overwrite"),
    ("out-dir-is-file", ["--out-dir", "{DATA}/a_file"], 2, r"out-dir .*a_file' exists and is not a directory"),
    ("out-dir-under-file", ["--out-dir", "{DATA}/a_file/sweep"], 2,
     r"out-dir .*a_file/sweep' cannot be created: .*a_file' is not a directory"),
    ("out-dir-proc", ["--out-dir", "/proc/pnn-sweep"], 2, r"out-dir '/proc/pnn-sweep' cannot be written"),
    ("out-dir-locked", ["--out-dir", "{LOCKED}"], 2, r"out-dir .* is in use by another pnn-sweep"),
]
HE = [
    ("missing-checkpoint", ["{DATA}/missing.pt"], 2, r"does not exist"),
    ("corrupt-checkpoint", ["{CORRUPT}/last.pt"], 2, r"is corrupted"),
    ("truncated-checkpoint", ["{TRUNCATED}/last.pt"], 2, r"truncated or corrupted"),
    ("nonfinite-checkpoint", ["{NONFINITE}/last.pt"], 2, r"non-finite"),
    ("no-checkpoint-in-dir", ["{DATA}"], 2, r"holds no checkpoint"),
    pytest.param("samples-zero", ["{RUN}", "--samples", "0"], 2, r"samples must be >= 1"),
    pytest.param("samples-text", ["{RUN}", "--samples", "ten"], 2, r"--samples"),
    pytest.param("modulus-text", ["{RUN}", "--coeff-mod-bit-sizes", "a,b"], 2, r"coeff-mod-bit-sizes"),
    pytest.param("json-missing-dir", ["{RUN}", "--samples", "1", "--json", "{DATA}/no/such/dir/r.json"], 2,
                 r"no/such/dir"),
    # outputs: named as written (numpy appends .npz/.npy otherwise), never over an input (issue 23)
    ("fold-out-without-npz", ["fold", "{RUN}", "--out", "{DATA}/model"], 2, r"--out .*/model must end in \.npz"),
    ("fold-inputs-out-without-npy", ["fold", "{RUN}", "--out", "{DATA}/m.npz", "--inputs-out", "{DATA}/x"], 2,
     r"--inputs-out .*/x must end in \.npy"),
    ("export-without-npz", ["{RUN}", "--export", "{DATA}/model"], 2, r"--export .*/model must end in \.npz"),
    ("json-over-checkpoint", ["{RUN}/best.pt", "--json", "{RUN}/best.pt"], 2,
     r"--json .*best\.pt is also an input of this command"),
]
MODULES = {"pnn-train": "pnn_ext.train", "pnn-ablate": "pnn_ext.train.ablation", "pnn-sweep": "pnn_ext.train.sweep",
           "pnn-he": "pnn_ext.he.cli"}

OP_SETUP = """
import math, torch, pnn_ext
from torch import nn
from pnn_ext import poly_act, PolyActivation, convert, set_impl
x = torch.randn(16, dtype=torch.float32); c = torch.randn(9) / 10
def backward(gy, gs, xx=x, cc=c):
    return torch.ops.pnn_ext.poly_act_backward(gy, gs, xx, cc, 2.0, 0.5, "chebyshev", True)
"""
# (id, code, regex of the one-line error, or None: the code asserts the correct result itself)
OPS = [
    ("int-input", "poly_act(x.int(), c, 2.0, 0.5)", r"x must be float16, bfloat16, float32 or float64, got Int"),
    ("bool-input", "poly_act(x > 0, c, 2.0, 0.5)", r"x must be float16.*got Bool"),
    ("complex-input", "poly_act(x.to(torch.complex64), c, 2.0, 0.5)", r"x must be float16.*ComplexFloat"),
    ("float64-coeffs", "poly_act(x, c.double(), 2.0, 0.5)", r"coeffs must be [Ff]loat.* for x of dtype"),
    ("float32-coeffs-float64-x", "poly_act(x.double(), c, 2.0, 0.5)", r"coeffs must be [Dd]ouble|float64"),
    ("one-coeff", "poly_act(x, c[:1], 2.0, 0.5)", r"degree must be >= 1, i\.e\. coeffs needs >= 2 entries, got 1"),
    ("no-coeffs", "poly_act(x, c[:0], 2.0, 0.5)", r"degree must be >= 1"),
    ("degree-129-op", "poly_act(x, torch.randn(130), 2.0, 0.5)", r"degree must be <= 128, got 129"),
    ("2d-coeffs", "poly_act(x, c.view(3, 3), 2.0, 0.5)", r"coeffs must be 1-D"),
    ("bound-zero", "poly_act(x, c, 0.0, 0.5)", r"bound \(B\) must be finite and > 0, got 0"),
    ("bound-negative", "poly_act(x, c, -1.0, 0.5)", r"bound \(B\) must be finite and > 0"),
    ("bound-nan", "poly_act(x, c, float('nan'), 0.5)", r"bound \(B\) must be finite and > 0, got nan"),
    ("bound-inf", "poly_act(x, c, float('inf'), 0.5)", r"bound \(B\) must be finite and > 0, got inf"),
    ("alpha-zero", "poly_act(x, c, 2.0, 0.0)", r"alpha must be finite and > 0"),
    ("alpha-nan", "poly_act(x, c, 2.0, float('nan'))", r"alpha must be finite and > 0"),
    ("basis-unknown", "poly_act(x, c, 2.0, 0.5, 'legendre')", r"basis must be 'monomial' or 'chebyshev'"),
    ("impl-unknown", "poly_act(x, c, 2.0, 0.5, impl='fast')", r"impl must be one of auto, fused, reference, decomp"),
    ("coeffs-on-meta", "poly_act(x, c.to('meta'), 2.0, 0.5)", r"coeffs must be on x's device cpu"),
    ("x-on-meta", "poly_act(x.to('meta'), c, 2.0, 0.5)", r"coeffs must be on x's device meta"),
    ("reference-int", "poly_act(x.int(), c, 2.0, 0.5, impl='reference')", r"x must be float16"),
    ("raw-op-basis", "torch.ops.pnn_ext.poly_act(x, c, 2.0, 0.5, 'x')", r"basis must be 'monomial' or 'chebyshev'"),
    ("backward-grad-y-meta", "backward(torch.ones(16, device='meta'), torch.zeros(3))",
     r"grad_y must be on x's device cpu, got meta"),
    ("backward-grad-stats-meta", "backward(torch.ones(16), torch.zeros(3, device='meta'))",
     r"grad_stats must be on x's device cpu, got meta"),
    ("backward-grad-y-shape", "backward(torch.ones(15), torch.zeros(3))", r"grad_y must have x's shape"),
    ("backward-grad-y-dtype", "backward(torch.ones(16).double(), torch.zeros(3))", r"grad_y must have x's dtype"),
    ("backward-grad-stats-shape", "backward(torch.ones(16), torch.zeros(2))", r"grad_stats must have shape \(3,\)"),
    ("double-backward", "xr = x.clone().requires_grad_()\n"
                        "g, = torch.autograd.grad(poly_act(xr, c, 2.0, 0.5)[0].sum(), xr, create_graph=True)\n"
                        "torch.autograd.grad(g.sum(), xr)", r"poly_act has no second derivative yet"),
    ("module-degree-true", "PolyActivation(degree=True)", r"degree must be an integer from 1 to 128, got True"),
    ("module-degree-false", "PolyActivation(degree=False)", r"degree must be an integer from 1 to 128, got False"),
    ("module-degree-0", "PolyActivation(degree=0)", r"degree must be an integer from 1 to 128, got 0"),
    ("module-degree-129", "PolyActivation(degree=129)", r"degree must be an integer from 1 to 128, got 129"),
    ("module-degree-float", "PolyActivation(degree=2.0)", r"degree must be an integer from 1 to 128, got 2\.0"),
    ("module-degree-text", "PolyActivation(degree='8')", r"degree must be an integer from 1 to 128, got '8'"),
    ("module-bound-zero", "PolyActivation(8, bound=0)", r"bound must be finite and > 0"),
    ("module-bound-nan", "PolyActivation(8, bound=float('nan'))", r"bound must be finite and > 0"),
    ("module-alpha-negative", "PolyActivation(8, alpha=-1)", r"alpha must be finite and > 0"),
    ("module-basis", "PolyActivation(8, basis='bernstein')", r"basis must be 'chebyshev' or 'monomial'"),
    ("module-impl", "PolyActivation(8, impl='cuda')", r"impl must be one of"),
    ("module-coeffs-shape", "PolyActivation(4, coeffs=torch.randn(3))", r"coeffs must have shape \(5,\) for degree 4"),
    ("module-target", "PolyActivation(4, target='swish')", r"target must be one of .* got 'swish'"),
    ("module-method", "PolyActivation(4, method='newton')", r"method must be 'lstsq' or 'remez'"),
    ("from-coefficients-short", "PolyActivation.from_coefficients([1.0], bound=2.0)", r"coeffs must be 1-D with >= 2"),
    ("from-coefficients-order", "PolyActivation.from_coefficients([1.0, 2.0], bound=2.0, order='mid')",
     r"order must be 'low' or 'high'"),
    ("from-coefficients-variable", "PolyActivation.from_coefficients([1.0, 2.0], bound=2.0, variable='y')",
     r"variable must be 't' or 'x'"),
    ("module-int-input", "PolyActivation(4)(torch.arange(4))", r"x must be float16.*got Long"),
    ("convert-degree-true", "convert(nn.Sequential(nn.ReLU()), degree=True)",
     r"degree must be an integer from 1 to 128"),
    ("convert-degree-200", "convert(nn.Sequential(nn.ReLU()), degree=200)", r"degree must be an integer from 1 to 128"),
    ("convert-types", "convert(nn.Sequential(nn.Linear(2, 2)), types=(nn.Linear,))", r"types must be among"),
    ("set-impl", "set_impl(nn.Sequential(PolyActivation(2)), 'gpu')", r"impl must be one of"),
    ("convert-again-other-degree", "convert(convert(nn.Sequential(nn.ReLU()), degree=8), degree=4)",
     r"already holds PolyActivation modules of other settings \('0': degree 8 \(this call: 4\)\); .*does not refit"),
    ("convert-script-module", "convert(torch.jit.script(nn.Sequential(nn.Linear(2, 2), nn.ReLU())), functional=False)",
     r"^the model is a TorchScript module \(RecursiveScriptModule\).*convert the nn\.Module it was scripted"),
    ("convert-exported-program", "convert(torch.export.export(nn.Sequential(nn.ReLU()), (x,)))",
     r"model must be a torch\.nn\.Module, got ExportedProgram"),
    # correct results
    ("nan-coeff-chebyshev", "cn = c.clone(); cn[3] = math.nan\nassert poly_act(x * 100, cn, 2.0, 0.5)[0].isnan().all()",
     None),
    ("nan-coeff-monomial", "cn = c.clone(); cn[8] = math.nan\n"
                           "assert poly_act(x * 100, cn, 2.0, 0.5, 'monomial')[0].isnan().all()", None),
    ("nan-coeff-float64", "cn = c.double(); cn[0] = math.nan\nassert poly_act(x.double() * 1e3, cn, 2.0, 0.5)[0]"
                          ".isnan().all()", None),
    ("nan-coeff-reference", "cn = c.clone(); cn[5] = math.nan\n"
                            "assert poly_act(x * 1e30, cn, 2.0, 0.5, impl='reference')[0].isnan().all()", None),
    ("nan-coeff-module", "m = PolyActivation(8); m.coeffs[2] = math.nan\nassert m(x).isnan().all()", None),
    ("overflow-is-inf", "y = poly_act(torch.tensor([1e30, -1e30]), c, 2.0, 0.5)[0]\n"
                        "assert y.isinf().all() and not y.isnan().any()", None),
    ("convert-relu-reused", "r = nn.ReLU()\n"
                            "m = convert(nn.Sequential(nn.Linear(2, 2), r, nn.Linear(2, 2), r), degree=4)\n"
                            "assert not any(isinstance(a, nn.ReLU) for a in m.modules()) and m[1] is m[3]", None),
    ("convert-again-same", "m = convert(nn.Sequential(nn.ReLU()), degree=4)\nassert convert(m, degree=4) is m", None),
    ("meta-forward", "y, s = poly_act(x.to('meta'), c.to('meta'), 2.0, 0.5)\n"
                     "assert y.device.type == 'meta' and y.shape == x.shape and s.shape == (3,)", None),
    ("module-degree-128", "assert PolyActivation(128)(x).isfinite().all()", None),
    ("reference-double-backward", "xr = x.double().requires_grad_()\n"
                                  "y = poly_act(xr, c.double(), 2.0, 0.5, impl='reference')[0]\n"
                                  "g, = torch.autograd.grad(y.sum(), xr, create_graph=True)\n"
                                  "assert torch.autograd.grad(g.sum(), xr)[0].isfinite().all()", None),
]


def _ids(cases):
    return [c.values[0] if hasattr(c, "values") else c[0] for c in cases]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The files the cases point at: a finished run (RUN), damaged copies of it, bad
    datasets and config files; then every case, run once through the fork server."""
    from pnn_ext.train import checkpoint, sweep, sweep_run
    from pnn_ext.train.config import TrainConfig
    from pnn_ext.train.loop import Trainer
    tmp = tmp_path_factory.mktemp("bad_invocations")
    data = tmp / "data"
    data.mkdir()
    run = tmp / "run"
    Trainer(TrainConfig(**{**QUICK, "model": "mlp", "hidden": "16", "degree": 2, "epochs": 1,
                           "out_dir": str(run)})).run()
    places = {"RUN": str(run), "DATA": str(data)}
    for name in ("corrupt", "truncated", "nonfinite"):
        shutil.copytree(run, tmp / name)
        places[name.upper()] = str(tmp / name)
    last = tmp / "corrupt" / "last.pt"
    blob = bytearray(last.read_bytes())
    blob[_record_offset(last, "data/0") + 2] ^= 0x40          # one bit of the first weight's data
    last.write_bytes(bytes(blob))
    (tmp / "truncated" / "last.pt").write_bytes((tmp / "truncated" / "last.pt").read_bytes()[:5000])
    ck = checkpoint.load(str(tmp / "nonfinite" / "last.pt"))
    next(v for k, v in ck["model"].items() if k.endswith("running_var")).fill_(float("inf"))
    checkpoint.save_atomic(ck, str(tmp / "nonfinite" / "last.pt"))
    shutil.copy(tmp / "nonfinite" / "last.pt", tmp / "nonfinite" / "best.pt")
    _datasets(data)
    places["SWEEP"], places["LOCKED"] = str(tmp / "sweep"), str(tmp / "locked")
    assert sweep.main(["--grid", "lr=1e-3", "--variants", "full", "--seeds", "0", "--out-dir", places["SWEEP"],
                       *SWEEP_TRAIN]) == 0
    cases = []
    tables = (("pnn-train", TRAIN), ("pnn-train", TRAIN_OWN_DIR), ("pnn-ablate", ABLATE), ("pnn-sweep", SWEEP),
              ("pnn-he", HE))
    for cli, table in tables:
        for c in table:
            cid, argv = (c.values if hasattr(c, "values") else c)[:2]
            argv = [a.format(**places) for a in argv]
            if table is TRAIN:
                # --max-steps 1: a case that wrongly passed would cost one step (and fail the digest check)
                argv = [*argv, "--out-dir", places["RUN"], "--overwrite", "--no-progress", "--max-steps", "1"]
            if table is ABLATE and "--out-dir" not in argv:
                argv = ["--out-dir", str(tmp / "ablation"), *argv]
            if table is SWEEP and "--out-dir" not in argv:
                argv = ["--out-dir", places["SWEEP"], *argv]
            watch = places["SWEEP" if table is SWEEP else "RUN"]
            cases.append(((cli, cid), {"module": MODULES[cli], "argv": argv, "watch": watch, "timeout": 60}))
    for cid, code, _ in OPS:
        cases.append((("op", cid), {"code": OP_SETUP + code, "timeout": 60}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "PNN_DATA": str(data)}
    from forkserver import tree_digest
    sweep_digest = tree_digest(places["SWEEP"])
    with sweep_run.locked(places["LOCKED"]):  # as a sweep running there would
        out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "forkserver.py")],
                             input="".join(json.dumps(c) + "\n" for _, c in cases), capture_output=True, text=True,
                             cwd=str(tmp), env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(results) == len(cases), out.stderr[-3000:]
    slow = sorted(((r["seconds"], key) for (key, _), r in zip(cases, results)), reverse=True)[:8]
    print("slowest cases:", slow)
    return {"places": places, "run_digest": tree_digest(places["RUN"]), "sweep_digest": sweep_digest, "tmp": tmp,
            "env": env,
            "results": {key: (case, r) for (key, case), r in zip(cases, results)}}


def _record_offset(path, suffix: str) -> int:
    """Byte offset of the data of the zip record whose name ends with ``suffix``."""
    import struct
    import zipfile
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _datasets(d) -> None:
    rng = np.random.default_rng(0)
    img = lambda n: rng.normal(size=(n, 1, 8, 8)).astype(np.float32)  # noqa: E731
    lab = lambda n, k=3: np.arange(n) % k  # noqa: E731

    def npz(name, **arrays):
        full = {"x_train": img(40), "y_train": lab(40), "x_test": img(10), "y_test": lab(10)}
        full.update(arrays)
        np.savez(d / name, **{k: v for k, v in full.items() if v is not None})
    npz("tiny_images.npz", x_train=rng.normal(size=(40, 1, 2, 2)), x_test=rng.normal(size=(10, 1, 2, 2)))
    npz("features.npz", x_train=rng.normal(size=(40, 5)), x_test=rng.normal(size=(10, 5)))
    npz("nokeys.npz", y_test=None)
    npz("stray.npz", y_train=np.where(np.arange(40) == 7, 255, lab(40)))
    npz("negative.npz", y_train=np.where(np.arange(40) == 7, -1, lab(40)))
    npz("fraction.npz", y_train=lab(40) + 0.5)
    npz("count.npz", y_train=lab(39))
    npz("complex.npz", x_train=img(40) + 1j)
    npz("huge.npz", x_train=img(40).astype(np.float64) * 1e300)
    npz("nan.npz", x_test=np.where(np.arange(640).reshape(10, 1, 8, 8) == 5, np.nan, img(10)))
    npz("notest.npz", x_test=img(0), y_test=lab(0))
    npz("fivedim.npz", x_train=rng.normal(size=(40, 1, 2, 2, 2)), x_test=rng.normal(size=(10, 1, 2, 2, 2)))
    np.savez(d / "pickled.npz", x_train=np.array([{"a": 1}] * 40, dtype=object), y_train=lab(40),
             x_test=img(10), y_test=lab(10))
    (d / "garbage.npz").write_bytes(b"PK\x03\x04 this is not a zip archive" * 10)
    idx = d / "idx"
    idx.mkdir()
    import gzip
    import struct
    files = {"train-images-idx3-ubyte": (3, (20, 4, 4)), "train-labels-idx1-ubyte": (1, (20,)),
             "t10k-images-idx3-ubyte": (3, (5, 4, 4)), "t10k-labels-idx1-ubyte": (1, (5,))}
    for name, (ndim, shape) in files.items():
        raw = b"\0\0\x08" + bytes([ndim]) + struct.pack(f">{ndim}I", *shape) + rng.integers(
            0, 3, int(np.prod(shape)), dtype=np.uint8).tobytes() * 1
        packed = bytearray(gzip.compress(raw))
        if name.startswith("train-images"):
            packed[len(packed) // 2] ^= 0xFF                           # the deflate stream, not the header
            packed[len(packed) // 2 + 1] ^= 0xFF
        (idx / (name + ".gz")).write_bytes(bytes(packed))
    (d / "bad.yaml").write_text("epochs: [1, 2\nlr: 0.1\n")
    (d / "bad.json").write_text('{"epochs": 2,}')
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "unknown.yaml").write_text("learning_rate: 0.1\n")
    (d / "degree.yaml").write_text("degree: 300\n")
    (d / "lr.yaml").write_text("lr: fast\n")
    (d / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81binary")
    (d / "a_file").write_text("not a directory\n")


def _check_cli(world, key, rc, pattern, watched="run_digest"):
    case, r = world["results"][key]
    text = r["stdout"] + r["stderr"]
    assert "Traceback" not in text, text[-3000:]
    assert r["rc"] == rc, (case["argv"], r["rc"], text[-2000:])
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
    assert len(lines) == 1, (case["argv"], lines)
    assert lines[0].startswith(f"{key[0]}: error: "), lines[0]
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert r["watch"] == world[watched], f"{case['argv']} changed the files it was pointed at"


@pytest.mark.parametrize("cid,argv,rc,pattern", TRAIN + TRAIN_OWN_DIR, ids=_ids(TRAIN + TRAIN_OWN_DIR))
def test_pnn_train_bad_invocation(world, cid, argv, rc, pattern):
    _check_cli(world, ("pnn-train", cid), rc, pattern)


@pytest.mark.parametrize("cid,argv,rc,pattern", ABLATE, ids=_ids(ABLATE))
def test_pnn_ablate_bad_invocation(world, cid, argv, rc, pattern):
    _check_cli(world, ("pnn-ablate", cid), rc, pattern)


@pytest.mark.parametrize("cid,argv,rc,pattern", SWEEP, ids=_ids(SWEEP))
def test_pnn_sweep_bad_invocation(world, cid, argv, rc, pattern):
    _check_cli(world, ("pnn-sweep", cid), rc, pattern, watched="sweep_digest")


@pytest.mark.parametrize("cid,argv,rc,pattern", HE, ids=_ids(HE))
def test_pnn_he_bad_invocation(world, cid, argv, rc, pattern):
    _check_cli(world, ("pnn-he", cid), rc, pattern)


@pytest.mark.parametrize("cid,code,pattern", OPS, ids=[c[0] for c in OPS])
def test_bad_op_call(world, cid, code, pattern):
    case, r = world["results"][("op", cid)]
    assert r["rc"] == 0, r["stderr"][-3000:]
    result = json.loads(r["stdout"].strip().splitlines()[-1])
    if pattern is None:
        assert result["raised"] is None, result
        return
    assert result["raised"] in ("RuntimeError", "ValueError", "TypeError", "ConvertError"), result
    message = result["message"]
    assert "\n" not in message.strip() and "Exception raised from" not in message, message
    assert re.search(pattern, message), (pattern, message)


def test_matrix_is_what_the_documentation_says():
    """docs/testing.md states the size of this matrix: the counts are those, exactly."""
    text = " ".join(open(os.path.join(ROOT, "docs", "testing.md")).read().split())
    m = re.search(r"runs (\d+) bad command lines \((\d+) of pnn-train, (\d+) of pnn-ablate, (\d+) of pnn-sweep, "
                  r"(\d+) of pnn-he\) and (\d+) op calls \((\d+) mistakes, (\d+) edge cases", text)
    assert m, "docs/testing.md no longer states the size of the bad-call matrix"
    edge = sum(1 for case in OPS if case[2] is None)
    train = len(TRAIN) + len(TRAIN_OWN_DIR)
    assert tuple(map(int, m.groups())) == (train + len(ABLATE) + len(SWEEP) + len(HE), train, len(ABLATE),
                                           len(SWEEP), len(HE), len(OPS), len(OPS) - edge, edge)


@pytest.mark.parametrize("cli,argv,pattern", [
    pytest.param("pnn-train", ["--degree", "129", "--out-dir", "{RUN}", "--overwrite"],
                 r"degree must be an integer from 1", marks=pytest.mark.slow),
    ("pnn-train", ["--out-dir", "{CORRUPT}", "--resume", "last", *RUN_ARGS], r"is corrupted"),
    pytest.param("pnn-ablate", ["--", "--lr", "-1"], r"lr must be > 0", marks=pytest.mark.slow),
    ("pnn-he", ["{DATA}/missing.pt"], r"does not exist"),
], ids=["train", "train-corrupt", "ablate", "he"])
def test_real_processes_agree_with_the_fork_server(world, cli, argv, pattern):
    """The same cases as plain ``python -m`` processes."""
    argv = [a.format(**world["places"]) for a in argv]
    r = subprocess.run([sys.executable, "-m", MODULES[cli], *argv], capture_output=True, text=True,
                       cwd=str(world["tmp"]), env=world["env"], timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.search(pattern, lines[0]), lines
    from forkserver import tree_digest
    assert tree_digest(world["places"]["RUN"]) == world["run_digest"]


@pytest.mark.parametrize("sig,rc", [(signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_writes_summary_interrupted_without_traceback(tmp_path, sig, rc):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "pnn_ext.train", "--epochs", "500", "--batch-size", "64",
                             "--model", "mlp", "--hidden", "16", "--degree", "2", "--no-progress", "--no-plots",
                             "--out-dir", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == rc, stderr[-2000:]
    assert "Traceback" not in stdout + stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["interrupted_by"] == sig.name
    assert summary["epochs_completed"] >= 1

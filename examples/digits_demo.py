"""Train a degree-22 polynomial MLP on scikit-learn's 8x8 digits (no download), CPU.

The short demo of the Quickstart until the training CLI exists: a ReLU fit of
degree 22 on [-47, 47] (preset), the exponential boundary loss, selective
gradient clipping, AdamW. Prints the fit error and the test accuracy.
"""
import argparse
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import pnn_ext as pnn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--degree", type=int, default=22, help="polynomial degree (default: 22)")
    ap.add_argument("--epochs", type=int, default=40, help="training epochs (default: 40)")
    ap.add_argument("--lam", type=float, default=100.0, help="boundary-loss weight lambda (default: 100)")
    ap.add_argument("--clip", type=float, default=1.0, help="selective clipping max norm (default: 1.0)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32)
    y = torch.tensor(digits.target)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=args.seed, stratify=y)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std

    fit = pnn.fit("relu", args.degree)
    print(f"ReLU fit: degree {args.degree}, B={fit.bound:g}: max error {fit.max_error:.3f}, rms {fit.rms_error:.3f}")
    model = pnn.convert(nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(),
                                      nn.Linear(128, 64), nn.BatchNorm1d(64), nn.ReLU(),
                                      nn.Linear(64, 10)), degree=args.degree)
    print(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_tr))
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            ce = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            loss = ce + args.lam * pnn.boundary_loss(model)
            opt.zero_grad()
            loss.backward()
            pnn.clip_grad_norm_selective_(model, args.clip)
            opt.step()
        if (epoch + 1) % 10 == 0 or epoch == 0:
            model.eval()
            with torch.no_grad():
                acc = (model(x_te).argmax(1) == y_te).float().mean().item()
            print(f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  ce {ce.item():.4f}  test acc {100 * acc:.2f}%")
    model.eval()
    with torch.no_grad():
        acc = (model(x_te).argmax(1) == y_te).float().mean().item()
        max_abs = max(float(m.range_stats[0]) for m in model.modules() if isinstance(m, pnn.PolyActivation))
    print(f"test accuracy {100 * acc:.2f}% (degree {args.degree}, {time.time() - start:.1f}s on CPU, "
          f"largest activation input {max_abs:.1f} vs B={fit.bound:g})")


if __name__ == "__main__":
    main()

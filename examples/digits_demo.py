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
    # Pixels are 0..16; border pixels are (nearly) constant in training, so their std is
    # floored at 1 grey level: a test digit touching the border must not become a 1e6 input.
    mean, std = x_tr.mean(0), x_tr.std(0).clamp_min(1.0)
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
        sums, batches = torch.zeros(2), 0
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            ce = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            boundary = pnn.boundary_loss(model)
            loss = ce + args.lam * boundary
            opt.zero_grad()
            loss.backward()
            pnn.clip_grad_norm_selective_(model, args.clip)
            opt.step()
            sums += torch.stack([ce.detach(), boundary.detach()])
            batches += 1
        if (epoch + 1) % 10 == 0 or epoch == 0:
            model.eval()
            with torch.no_grad():
                acc = (model(x_te).argmax(1) == y_te).float().mean().item()
            ce_mean, boundary_mean = (sums / batches).tolist()
            print(f"epoch {epoch + 1:3d}  mean ce {ce_mean:.4f}  mean boundary term {boundary_mean:.2e}  "
                  f"test acc {100 * acc:.2f}%")
    model.eval()
    with torch.no_grad():
        acc = (model(x_te).argmax(1) == y_te).float().mean().item()
        ranges = [m.range_stats.tolist() for m in model.modules() if isinstance(m, pnn.PolyActivation)]
    print("activation inputs on the test set: " + ", ".join(
        f"layer {i}: max |x| {mx:.1f}, {100 * frac:.2f}% beyond B" for i, (mx, frac) in enumerate(ranges)))
    print(f"test accuracy {100 * acc:.2f}% (degree {args.degree}, B={fit.bound:g}, {time.time() - start:.1f}s on CPU)")


if __name__ == "__main__":
    main()

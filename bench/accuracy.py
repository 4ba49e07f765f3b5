"""Accuracy of the fused op against float64, for docs/numerics.md.

    python bench/accuracy.py          # ReLU fits, degrees 2..22, both bases, all dtypes

For each degree (preset B), the ReLU least-squares fit is evaluated on 100001
points of [-B, B] by the fused op in each dtype and by the float64 reference
with the same (float32) coefficients; the table gives max |error| / max |y|.
The fit's own error (polynomial vs ReLU) is shown beside it for scale.
"""
import torch

import pnn_ext
from pnn_ext import reference


def main():
    dtypes = [torch.float32, torch.bfloat16, torch.float16]
    print(f"{'degree':>6} {'B':>5} {'basis':>9} {'fit max err':>12} " + " ".join(f"{str(d)[6:]:>10}" for d in dtypes))
    for degree in (2, 4, 8, 16, 22):
        bound, alpha = pnn_ext.preset(degree)
        x64 = torch.linspace(-bound, bound, 100_001, dtype=torch.float64)
        for basis in ("chebyshev", "monomial"):
            fit = pnn_ext.fit("relu", degree, bound, basis=basis)
            c = torch.tensor(fit.coeffs, dtype=torch.float32)
            errs = []
            for dt in dtypes:
                x = x64.to(dt)
                exact, _ = reference.poly_act(x.double(), c.double(), bound, alpha, basis)
                y, _ = pnn_ext.poly_act(x, c, bound, alpha, basis)
                errs.append(float((y.double() - exact).abs().max() / exact.abs().max()))
            print(f"{degree:>6} {bound:>5g} {basis:>9} {fit.max_error:>12.3g} " + " ".join(f"{e:>10.2e}" for e in errs))


if __name__ == "__main__":
    main()

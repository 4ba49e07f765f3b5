"""``python experiments/he/he_chebyshev.py``: the Chebyshev evaluator against TenSEAL's monomial
``polyval`` on the folded ReLU fits (p(t)/B, |t| <= 1, 8192 points), at N=16384 and a
2^40 scale: max error against the float64 polynomial, levels consumed, and operation
counts. The numbers of docs/he.md's "Chebyshev evaluation" section."""
from __future__ import annotations

import numpy as np
import tenseal as ts

import pnn_ext
from pnn_ext.he import chebyshev
from pnn_ext.he.engine import Engine


def main() -> None:
    print("| degree | sum abs c (monomial / Chebyshev) | depth (Chebyshev / polyval) | error Chebyshev | "
          "error polyval | ciphertext products | plaintext products | rescales |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for degree in (2, 8, 22, 32):
        fit = pnn_ext.fit("relu", degree)
        mono = fit.monomial_coeffs_t() / fit.bound
        c = chebyshev.cheb_from_monomial(mono)
        plan = chebyshev.plan(c)
        levels = max(plan.depth, degree.bit_length())
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=16384,
                         coeff_mod_bit_sizes=[60] + [40] * levels + [60])
        ctx.global_scale = 2.0 ** 40
        e = Engine(ctx)
        t = np.linspace(-1, 1, e.slots)
        want = np.polynomial.polynomial.polyval(t, mono)
        x = e.encrypt(t)
        y = chebyshev.evaluate(e, x, plan)
        err = np.abs(np.array(e.decrypt(y, e.slots)) - want).max()
        mono_err = np.abs(np.array(ts.ckks_vector(ctx, t.tolist()).polyval(mono.tolist()).decrypt()) - want).max()
        print(f"| {degree} | {np.abs(mono).sum():.3g} / {np.abs(c).sum():.3g} | {e.level(y) - e.level(x)} / "
              f"{degree.bit_length()} | {err:.1e} | {mono_err:.1e} | {e.counts['ct_mult']} | "
              f"{e.counts['plain_mult']} | {e.counts['rescale']} |")


if __name__ == "__main__":
    main()

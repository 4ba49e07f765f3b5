"""Multiplicative depth of an HE-ready model and CKKS parameters for it.

Depth (levels of the modulus chain consumed):
* an affine layer: 1 (plaintext products, one rescale);
* a polynomial of degree d: ceil(log2(d + 1)) with the Chebyshev evaluator
  (pnn_ext.he.chebyshev): degree 2 needs 2 levels, 8 needs 4, 16 and 22 need 5,
  32 needs 6. (TenSEAL's monomial ``polyval`` happens to need the same,
  d.bit_length(), but its error grows with the monomial coefficients.)

Parameters: a chain ``[edge] + [scale_bits] * depth + [edge]`` with edge = min(60,
scale_bits + 20) (integer part of 20 bits), scale 2^scale_bits, and the smallest
ring dimension N whose total modulus respects 128-bit security (the
HomomorphicEncryption.org standard, as SEAL enforces it: N=8192: 218 bits,
16384: 438, 32768: 881). With sample packing the widest layer must fit in N/2
slots; with batch packing (slot = sample) any width fits and N/2 is the batch.

The scale is chosen from the coefficients the evaluator multiplies by: the CKKS
error of sum c_k T_k(t) on |t| <= 1 grows as ``sum|c_k| * 2^(18 - scale_bits)``
(below sum|c_k| ~ 1e3 a floor of ~1e-7 at 2^40 dominates; checked in
tests/test_he.py). Chebyshev coefficients of a fitted activation sum to ~1, so
2^40 serves every degree tried; scale_bits is the smallest multiple of 5 >= 40
that keeps the bound under ``tolerance``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .chebyshev import depth_for_degree
from .model import Affine, HEModel, Poly

# Largest total coefficient modulus (bits) for 128-bit classical security, by ring dimension.
MAX_MODULUS_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
MAX_PRIME_BITS = 60
DEFAULT_TOLERANCE = 1e-2  # per activation, whose outputs are O(1) after folding


class HEParameterError(ValueError):
    """CKKS parameters that cannot carry the model (too shallow, too small, insecure)."""


def poly_depth(degree: int) -> int:
    """Levels the Chebyshev evaluator consumes for a polynomial of this degree: ceil(log2(d + 1))."""
    return depth_for_degree(int(degree))


def layer_depths(model: HEModel) -> list[int]:
    """Levels each layer of ``model`` consumes (affine: 1; polynomial: poly_depth of its degree)."""
    return [1 if isinstance(layer, Affine) else poly_depth(layer.degree) for layer in model.layers]


def depth(model: HEModel) -> int:
    """The multiplicative depth of ``model``: levels of the modulus chain one evaluation consumes."""
    return sum(layer_depths(model))


def max_width(model: HEModel) -> int:
    """Largest vector an encrypted evaluation holds (input, or any layer's output)."""
    return max([int(np.prod(model.in_shape))] + [layer.weight.shape[0] for layer in model.layers
                                                if isinstance(layer, Affine)])


def coefficient_mass(model: HEModel) -> float:
    """Largest sum |c_k| of the model's polynomials in the Chebyshev basis (what their CKKS error
    scales with)."""
    return max([float(np.abs(layer.coeffs).sum()) for layer in model.layers
                if isinstance(layer, Poly)], default=1.0)


def needed_scale_bits(model: HEModel, tolerance: float = DEFAULT_TOLERANCE) -> int:
    bits = 18 + math.log2(max(coefficient_mass(model), 1.0) / tolerance)
    return int(max(40, 5 * math.ceil(bits / 5)))


@dataclass
class CKKSParams:
    """CKKS parameters: ring dimension N, the modulus chain's prime sizes (bits), scale 2^scale_bits."""
    poly_modulus_degree: int
    coeff_mod_bit_sizes: list[int]
    scale_bits: int

    @property
    def levels(self) -> int:
        """Rescales available: the chain minus its first and last (special) primes."""
        return len(self.coeff_mod_bit_sizes) - 2

    @property
    def total_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    def __str__(self) -> str:
        sizes = self.coeff_mod_bit_sizes
        mid = f"{sizes[1]}x{len(sizes) - 2}" if len(sizes) > 2 and len(set(sizes[1:-1])) == 1 else \
            ",".join(map(str, sizes[1:-1]))
        return (f"N={self.poly_modulus_degree}, coeff_mod_bit_sizes=[{sizes[0]}, {mid}, {sizes[-1]}] "
                f"({self.total_bits} bits), scale=2^{self.scale_bits}")


PACKINGS = ("sample", "batch")


def recommend(model: HEModel, scale_bits: int | None = None, tolerance: float = DEFAULT_TOLERANCE,
              packing: str = "sample") -> CKKSParams:
    """The smallest 128-bit-secure parameters that carry ``model``; HEParameterError if none."""
    d = depth(model)
    bits = scale_bits if scale_bits is not None else needed_scale_bits(model, tolerance)
    edge = min(MAX_PRIME_BITS, bits + 20)
    if edge - bits < 10:
        raise HEParameterError(f"a scale of 2^{bits} leaves {edge - bits} bits for the integer part under a "
                               f"{MAX_PRIME_BITS}-bit prime (at least 10 needed): the polynomial coefficients are "
                               f"too large for CKKS at this degree (or pass a smaller scale_bits)")
    sizes = [edge] + [bits] * d + [edge]
    total = sum(sizes)
    slots_needed = max_width(model) if packing == "sample" else 1
    for n, limit in sorted(MAX_MODULUS_BITS.items()):
        if total <= limit and n // 2 >= slots_needed:
            return CKKSParams(n, sizes, bits)
    raise HEParameterError(
        f"the model needs multiplicative depth {d} ({' + '.join(map(str, layer_depths(model)))}) at a scale of "
        f"2^{bits}: a {total}-bit modulus and {slots_needed} slots, more than N=32768 allows at 128-bit security "
        f"({MAX_MODULUS_BITS[32768]} bits). Use a lower degree, fewer polynomial layers or a smaller scale.")


def check(model: HEModel, params: CKKSParams, packing: str = "sample") -> None:
    """Raise HEParameterError naming what is short when ``params`` cannot carry ``model``."""
    d = depth(model)
    if params.levels < d:
        raise HEParameterError(
            f"parameters too small for the depth: the model needs {d} levels "
            f"({' + '.join(map(str, layer_depths(model)))}), coeff_mod_bit_sizes {params.coeff_mod_bit_sizes} "
            f"give {params.levels}")
    limit = MAX_MODULUS_BITS.get(params.poly_modulus_degree)
    if limit is None:
        raise HEParameterError(f"poly_modulus_degree must be one of {sorted(MAX_MODULUS_BITS)}, "
                               f"got {params.poly_modulus_degree}")
    if params.total_bits > limit:
        raise HEParameterError(f"coeff_mod_bit_sizes total {params.total_bits} bits: over the {limit} bits "
                               f"that N={params.poly_modulus_degree} allows at 128-bit security")
    if packing == "sample" and params.poly_modulus_degree // 2 < max_width(model):
        raise HEParameterError(f"a layer holds {max_width(model)} values: more than the "
                               f"{params.poly_modulus_degree // 2} slots of N={params.poly_modulus_degree}")

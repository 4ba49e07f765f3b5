"""HE deployment: fold a trained polynomial network into affine maps and monomial
polynomials (fold), count its multiplicative depth and choose CKKS parameters
(params), run it on encrypted inputs with TenSEAL (encrypted), and ``pnn-he``
(cli). TenSEAL is needed only for the encrypted part: pip install 'pnn_ext[he]'."""
from .fold import Affine, HEModel, Poly, UnsupportedLayerError, fold
from .params import CKKSParams, HEParameterError, check, depth, layer_depths, poly_depth, recommend

__all__ = ["Affine", "CKKSParams", "HEModel", "HEParameterError", "Poly", "UnsupportedLayerError", "check", "depth",
           "fold", "layer_depths", "poly_depth", "recommend"]

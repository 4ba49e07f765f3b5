"""HE deployment: fold a trained polynomial network into affine maps and Chebyshev
polynomials (fold, model), count its multiplicative depth and choose CKKS parameters
(params), run it on encrypted inputs with TenSEAL (per_sample and batch packing), and
``pnn-he`` (cli, split_cli). TenSEAL is needed only for the encrypted part:
pip install 'pnn_ext[he]'."""
from .fold import UnsupportedLayerError, fold
from .model import Affine, HEModel, InputRange, ModelFileError, Poly
from .params import CKKSParams, HEParameterError, check, depth, layer_depths, poly_depth, recommend

__all__ = ["Affine", "CKKSParams", "HEModel", "HEParameterError", "InputRange", "ModelFileError", "Poly",
           "UnsupportedLayerError", "check", "depth", "fold", "layer_depths", "poly_depth", "recommend"]

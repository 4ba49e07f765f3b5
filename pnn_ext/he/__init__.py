"""HE deployment: fold a trained polynomial network into affine maps and Chebyshev
polynomials (fold, model), count its multiplicative depth and choose CKKS parameters
(params), run it on encrypted inputs with TenSEAL (per_sample and batch packing),
``pnn-he`` (cli, split_cli), and serve it over the network (server, Client). TenSEAL
is needed only for the encrypted part: pip install 'pnn_ext[he]'; the service needs
FastAPI, uvicorn and httpx: pip install 'pnn_ext[serve]'."""
from .client import Client
from .fold import UnsupportedLayerError, fold
from .model import Affine, HEModel, InputRange, ModelFileError, Poly
from .params import CKKSParams, HEParameterError, check, depth, layer_depths, poly_depth, recommend
from .session_store import ServiceError

__all__ = ["Affine", "CKKSParams", "Client", "HEModel", "HEParameterError", "InputRange", "ModelFileError", "Poly",
           "ServiceError", "UnsupportedLayerError", "check", "depth", "fold", "layer_depths", "poly_depth", "recommend"]

"""pnn_ext: fused polynomial activations and tools for polynomial neural networks."""
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from . import models
from .clip import clip_grad_norm_selective_
from .conversion import ConvertError, NotPolynomialError, PolynomialReport, convert, polynomial_report
from .export import export_onnx
from .fitting import PRESETS, PolyFit, fit, preset, register_target
from .nn import PolyActivation, boundary_loss, set_impl, track
from .ops import cpu_capability, has_cuda_kernels, poly_act

try:
    __version__ = _version("pnn_ext")  # the installed distribution's, from pyproject.toml
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "PRESETS", "ConvertError", "NotPolynomialError", "PolyActivation", "PolyFit", "PolynomialReport",
    "boundary_loss", "clip_grad_norm_selective_", "convert", "cpu_capability", "fit", "has_cuda_kernels", "models",
    "poly_act", "polynomial_report", "preset", "register_target", "set_impl", "track",
]
__all__ += ["export_onnx"]

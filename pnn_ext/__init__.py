"""pnn_ext: fused polynomial activations and tools for polynomial neural networks."""
from . import models
from .clip import clip_grad_norm_selective_
from .fitting import PRESETS, PolyFit, fit, preset
from .nn import PolyActivation, boundary_loss, convert, set_impl, track
from .ops import cpu_capability, has_cuda_kernels, poly_act

__all__ = [
    "PRESETS", "PolyActivation", "PolyFit", "boundary_loss", "clip_grad_norm_selective_", "convert",
    "cpu_capability", "fit", "has_cuda_kernels", "models", "poly_act", "preset", "set_impl", "track",
]

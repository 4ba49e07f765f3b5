"""PolyActivation (a drop-in for nn.ReLU), boundary_loss(model) and track(model); convert() is in
pnn_ext.convert."""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from . import fitting, ops, reference

# Degree, target, basis and fit method default to pnn_ext.fitting's DEGREE, TARGET, BASIS, METHOD.
LAMBDA = 1000.0  # the boundary-loss weight of the paper: loss = task loss + LAMBDA * boundary_loss(model)
IMPLS = ops.IMPLS  # "auto", "fused", "reference", "decomposed": see pnn_ext.ops.poly_act


def _positive(name: str, value) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return value


class PolyActivation(nn.Module):
    """y = p(x / B), a polynomial fitted to ``target`` on [-B, B], evaluated by the fused op.

    Each call also computes the layer's boundary term
    ``L = mean(expm1(max(|x| - alpha*B, 0)))`` (continued linearly beyond an
    excess of 30, see :func:`pnn_ext.ops.poly_act`) in the same pass, kept as a
    differentiable tensor, and range statistics kept detached (no host sync):

    * ``boundary_terms``: the L of each call since the last forward of the model
      (see :func:`boundary_loss`), or of the last call for a standalone module;
    * ``range_stats``: tensor [max|x|, fraction of |x| > B] of the last call.

    Args:
        degree: polynomial degree, 1..fitting.MAX_DEGREE (the fused op's limit).
        bound: B; default from :func:`pnn_ext.fitting.preset`.
        alpha: the penalty starts at alpha*B; default from the preset.
        target: function fitted ("relu", "silu", "gelu", "sigmoid", "tanh").
        basis: "chebyshev" (Clenshaw, stable at high degree) or "monomial" (Horner).
        learnable: coefficients are an nn.Parameter (else a buffer).
        method: "lstsq" or "remez" (minimax) fit.
        impl: which implementation of :func:`pnn_ext.poly_act` runs: "auto" (the
            compiled op, else the reference with a warning), "fused" (the compiled
            op; an error where it is unavailable) or "reference"
            (:mod:`pnn_ext.reference`, pure PyTorch) or "decomposed" (plain operations
            inductor fuses with their neighbours under torch.compile, see
            :func:`pnn_ext.ops.decomposed`). An attribute: set it on a built module to switch.
        boundary_form: shape of the boundary term: "exp" (above, the paper's) or
            "quadratic" (``mean(max(|x| - alpha*B, 0)^2)``). Training only: it
            changes neither y nor what pnn_ext.he folds. Saved in the state dict.
    """

    def __init__(self, degree: int = fitting.DEGREE, bound: float | None = None, alpha: float | None = None,
                 target: str = fitting.TARGET, basis: str = fitting.BASIS, learnable: bool = False,
                 method: str = fitting.METHOD, *, coeffs: torch.Tensor | np.ndarray | None = None, impl: str = "auto",
                 boundary_form: str = "exp"):
        super().__init__()
        fitting.check_degree(degree)
        preset_bound, preset_alpha = fitting.preset(degree)
        bound = preset_bound if bound is None else bound
        alpha = preset_alpha if alpha is None else alpha
        bound, alpha = _positive("bound", bound), _positive("alpha", alpha)
        if basis not in reference.BASES:
            raise ValueError(f"basis must be 'chebyshev' or 'monomial', got {basis!r}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {list(IMPLS)}, got {impl!r}")
        if boundary_form not in reference.BOUNDARY_FORMS:
            raise ValueError(f"boundary_form must be one of {list(reference.BOUNDARY_FORMS)}, got {boundary_form!r}")
        self.boundary_form = boundary_form
        if coeffs is None:
            coeffs = fitting.fit(target, degree, bound, basis=basis, method=method).coeffs
        c = torch.as_tensor(np.asarray(coeffs, dtype=np.float64) if not torch.is_tensor(coeffs) else coeffs,
                            dtype=torch.float32).detach().clone()
        if c.shape != (degree + 1,):
            raise ValueError(f"coeffs must have shape ({degree + 1},) for degree {degree}, got {tuple(c.shape)}")
        self.degree, self.bound, self.alpha = degree, bound, alpha
        self.target, self.basis, self.learnable, self.impl = str(target), basis, learnable, impl
        if learnable:
            self.coeffs = nn.Parameter(c)
        else:
            self.register_buffer("coeffs", c)
        self.boundary_terms: list[torch.Tensor] = []
        self.range_stats: torch.Tensor | None = None
        self._accumulate = False  # set by track(): append per call, cleared per model forward

    @classmethod
    def from_preset(cls, degree: int, **kwargs) -> PolyActivation:
        """B and alpha from the published table (pnn_ext.fitting.PRESETS)."""
        bound, alpha = fitting.preset(degree)
        return cls(degree, bound, alpha, **kwargs)

    @classmethod
    def from_coefficients(cls, coeffs, bound: float, alpha: float = 0.5, basis: str = "chebyshev",
                          variable: str = "t", order: str = "low", **kwargs) -> PolyActivation:
        """Import coefficients made elsewhere.

        ``variable="t"``: coefficients of p in t = x / bound, in ``basis``.
        ``variable="x"``: monomial coefficients in x (``order`` "low" = a_0..a_d,
        "high" = a_d..a_0 as numpy.polyfit), converted to t.
        """
        c = np.asarray(torch.as_tensor(coeffs).detach().cpu().double().numpy() if torch.is_tensor(coeffs)
                       else coeffs, dtype=np.float64)
        if c.ndim != 1 or c.size < 2:
            raise ValueError(f"coeffs must be 1-D with >= 2 entries, got shape {c.shape}")
        if order not in ("low", "high"):
            raise ValueError(f"order must be 'low' or 'high', got {order!r}")
        if order == "high":
            c = c[::-1]
        if variable == "x":
            if basis != "monomial":
                raise ValueError("coefficients in x are monomial: pass basis='monomial'")
            c = c * float(bound) ** np.arange(c.size)
        elif variable != "t":
            raise ValueError(f"variable must be 't' or 'x', got {variable!r}")
        return cls(c.size - 1, bound, alpha, basis=basis, coeffs=c, target=kwargs.pop("target", "custom"),
                   **kwargs)

    def set_bound(self, bound: float, method: str = fitting.METHOD, weight=None) -> None:
        """Move the fit interval to [-bound, bound]: the coefficients (in t = x / B)
        are refitted to ``target`` there, in place (a learnable Parameter stays the
        same object; what it had learned is replaced). ``method`` and ``weight``: as
        in :func:`pnn_ext.fit`."""
        try:  # a registered target, with parameters or not ("leaky_relu(negative_slope=0.2)")
            refittable = fitting.parse_target(self.target)[0] in fitting.TARGETS
        except ValueError:
            refittable = False
        if not refittable:
            raise ValueError(f"set_bound refits the target function; this activation's target is {self.target!r}")
        bound = _positive("bound", bound)
        c = fitting.fit(self.target, self.degree, bound, basis=self.basis, method=method, weight=weight).coeffs
        with torch.no_grad():
            self.coeffs.copy_(torch.as_tensor(np.asarray(c), dtype=self.coeffs.dtype))
        self.bound = bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coeffs = self.coeffs.to(reference.compute_dtype(x.dtype))
        y, stats = ops.poly_act(x, coeffs, self.bound, self.alpha, self.basis, impl=self.impl,
                                boundary_form=self.boundary_form)
        if self._accumulate:
            self.boundary_terms.append(stats[0])
        else:
            self.boundary_terms = [stats[0]]
        self.range_stats = stats[1:].detach()
        return y

    def extra_repr(self) -> str:
        return (f"degree={self.degree}, bound={self.bound:g}, alpha={self.alpha:g}, basis={self.basis}, "
                f"target={self.target}, learnable={self.learnable}" + (f", impl={self.impl}" if self.impl != "auto"
                                                                       else "")
                + (f", boundary_form={self.boundary_form}" if self.boundary_form != "exp" else ""))

    def __prepare_scriptable__(self):
        # torch.jit.script calls this on every submodule before compiling: one clear line
        # instead of a TorchScript compilation error deep in pnn_ext.ops.
        raise RuntimeError(TORCHSCRIPT_REFUSAL.format(what="torch.jit.script"))

    # The configuration travels with the state dict, so load_state_dict restores
    # an activation built with other settings.
    def get_extra_state(self):
        if _in_torchscript_onnx_export():  # it reads the state dict as tensors only, and fails on this dict
            raise RuntimeError(TORCHSCRIPT_REFUSAL.format(what="torch.onnx.export(..., dynamo=False)"))
        return {"degree": self.degree, "bound": self.bound, "alpha": self.alpha, "basis": self.basis,
                "target": self.target, "boundary_form": self.boundary_form}

    def set_extra_state(self, state) -> None:
        if state["degree"] != self.degree:
            raise ValueError(f"state_dict is for degree {state['degree']}, this module has degree {self.degree}")
        self.bound, self.alpha = float(state["bound"]), float(state["alpha"])
        self.basis, self.target = state["basis"], state["target"]
        self.boundary_form = state.get("boundary_form", "exp")  # states saved before the form existed


TORCHSCRIPT_REFUSAL = ("pnn_ext: {what} (TorchScript, in maintenance) is not supported for PolyActivation; use "
                       "torch.export.export(model, (x,)), or pnn_ext.export_onnx(model, x, 'model.onnx') for ONNX "
                       "(docs/export.md)")


def _in_torchscript_onnx_export() -> bool:
    """True inside torch.onnx.export(..., dynamo=False) (the dynamo exporter is supported)."""
    try:
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    except ImportError:  # a torch without the TorchScript-based exporter
        return False
    return bool(GLOBALS.in_onnx_export)


def poly_modules(model: nn.Module) -> Iterable[PolyActivation]:
    return (m for m in model.modules() if isinstance(m, PolyActivation))


def set_impl(model: nn.Module, impl: str) -> nn.Module:
    """Make every PolyActivation of ``model`` run ``impl`` ("auto", "fused", "reference" or
    "decomposed", see :class:`PolyActivation`); returns ``model``."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {list(IMPLS)}, got {impl!r}")
    for m in poly_modules(model):
        m.impl = impl
    return model


def _clear_terms(model: nn.Module, args) -> None:
    for m in poly_modules(model):
        m.boundary_terms = []


def track(model: nn.Module) -> nn.Module:
    """Make every PolyActivation of ``model`` keep the boundary terms of *all* its
    calls in one forward of ``model`` (a module reused in a forward, as
    torchvision's ResNet blocks reuse their ReLU, adds one term per call); they
    are cleared when the next forward starts. convert() calls this."""
    for m in poly_modules(model):
        m._accumulate = True
    if not getattr(model, "_pnn_tracked", False):
        model.register_forward_pre_hook(_clear_terms)
        model._pnn_tracked = True
    return model


def boundary_loss(model: nn.Module) -> torch.Tensor:
    """Sum over PolyActivation calls of the last forward of their boundary terms L_i.

    Multiply by lambda and add to the task loss. 0 (a tensor) if no term exists."""
    terms = [t for m in poly_modules(model) for t in m.boundary_terms]
    if not terms:
        return torch.zeros(())
    return torch.stack([t.float() if t.dtype != torch.float64 else t for t in terms]).sum()

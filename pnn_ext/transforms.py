"""torch.func support for the fused op: grad, jacrev, jacfwd/jvp, vmap and their compositions.

The autograd formula that :func:`torch.library.register_autograd` attaches to
``pnn_ext::poly_act`` is an autograd.Function without ``setup_context``, which
torch.func's transforms refuse ("must override the setup_context staticmethod").
:class:`FusedPolyAct` is the same formula as an autograd.Function that they accept,
with a forward-mode rule (``jvp``) beside the backward; :func:`pnn_ext.poly_act`
calls it. vmap rules are registered on both ops, so that a batched call is one pass
(poly_act) or one call per sample (poly_act_backward, whose per-sample reductions
must stay per sample) instead of PyTorch's fallback and its warning.
"""
from __future__ import annotations

import torch

from . import reference

_SECOND_DERIVATIVE = ("pnn_ext: poly_act has no second derivative yet (double backward, hessian, jacfwd of jacrev); "
                      "impl='reference' supports it")


def _zero_stats_grad(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(3, dtype=reference.compute_dtype(x.dtype))


class FusedPolyAct(torch.autograd.Function):
    """``torch.ops.pnn_ext.poly_act`` with its backward and forward-mode derivatives."""

    generate_vmap_rule = True  # the ops' own vmap rules (below) serve every stage

    @staticmethod
    def forward(x, coeffs, bound, alpha, basis, boundary_form):
        return torch.ops.pnn_ext.poly_act(x, coeffs, bound, alpha, basis, boundary_form)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, coeffs, bound, alpha, basis, boundary_form = inputs
        ctx.save_for_backward(x, coeffs)  # only x (and the d+1 coefficients), whatever the degree
        ctx.save_for_forward(x, coeffs)
        ctx.params = (bound, alpha, basis, boundary_form)

    @staticmethod
    def backward(ctx, grad_y, grad_stats):
        x, coeffs = ctx.saved_tensors
        bound, alpha, basis, boundary_form = ctx.params
        grad_y = torch.zeros_like(x) if grad_y is None else grad_y
        grad_stats = _zero_stats_grad(x) if grad_stats is None else grad_stats
        grad_x, grad_coeffs = FusedPolyActBackward.apply(grad_y, grad_stats, x, coeffs, bound, alpha, basis,
                                                         ctx.needs_input_grad[1], boundary_form)
        return (grad_x if ctx.needs_input_grad[0] else None,
                grad_coeffs if ctx.needs_input_grad[1] else None, None, None, None, None)

    @staticmethod
    def jvp(ctx, x_t, coeffs_t, *_):
        """y' = p'(x) x' + p_{c'}(x) (p is linear in its coefficients); L' = sum_j dL/dx_j x'_j;
        max|x| and the fraction outside [-B, B] carry no derivative, as in the backward."""
        x, coeffs = ctx.saved_tensors
        bound, alpha, basis, boundary_form = ctx.params
        acc = reference.compute_dtype(x.dtype)
        y_t, dl = torch.zeros_like(x), x.new_zeros((), dtype=acc)
        if x_t is not None:
            backward = torch.ops.pnn_ext.poly_act_backward
            # The backward with grad_y = x' is p'(x) x', elementwise; with grad_L = 1 it is dL/dx.
            y_t, _ = backward(x_t, _zero_stats_grad(x), x, coeffs, bound, alpha, basis, False, boundary_form)
            dl_dx, _ = backward(torch.zeros_like(x), torch.tensor([1.0, 0.0, 0.0], dtype=acc, device=x.device),
                                x, coeffs, bound, alpha, basis, False, boundary_form)
            dl = (dl_dx.to(acc) * x_t.to(acc)).sum()
        if coeffs_t is not None:
            y_t = y_t + torch.ops.pnn_ext.poly_act(x, coeffs_t, bound, alpha, basis, boundary_form)[0]
        return y_t, torch.stack([dl, dl.new_zeros(()), dl.new_zeros(())])


class FusedPolyActBackward(torch.autograd.Function):
    """``torch.ops.pnn_ext.poly_act_backward``, refusing a second derivative in one clear line
    (under torch.func as under autograd)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_y, grad_stats, x, coeffs, bound, alpha, basis, coeffs_grad, boundary_form):
        return torch.ops.pnn_ext.poly_act_backward(grad_y, grad_stats, x, coeffs, bound, alpha, basis, coeffs_grad,
                                                   boundary_form)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(_SECOND_DERIVATIVE)

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(_SECOND_DERIVATIVE)


def _sample(t: torch.Tensor, dim: int | None, i: int) -> torch.Tensor:
    return t if dim is None else t.select(dim, i)


@torch.library.register_vmap("pnn_ext::poly_act")
def _poly_act_vmap(info, in_dims, x, coeffs, bound, alpha, basis, boundary_form="exp"):
    x_dim, coeffs_dim = in_dims[0], in_dims[1]
    op = torch.ops.pnn_ext.poly_act
    if coeffs_dim is not None:  # coefficients per sample (e.g. an ensemble): one call each
        outs = [op(_sample(x, x_dim, i), coeffs.select(coeffs_dim, i), bound, alpha, basis, boundary_form)
                for i in range(info.batch_size)]
        return (torch.stack([y for y, _ in outs]), torch.stack([s for _, s in outs])), (0, 0)
    # y is elementwise: one pass over the whole batch; the statistics are reduced per sample.
    y, _ = op(x, coeffs, bound, alpha, basis, boundary_form)
    samples = x.movedim(x_dim, 0).detach().reshape(info.batch_size, -1)
    acc = reference.compute_dtype(x.dtype)
    ax = samples.to(acc).abs()
    n = max(samples.shape[1], 1)
    max_abs = ax.amax(1) if samples.shape[1] else ax.new_zeros(info.batch_size)
    frac = (ax > bound).sum(1).double() / n
    loss = reference.boundary_term(samples.to(acc), bound, alpha, boundary_form, per_row=True)
    return (y, torch.stack([loss.to(acc), max_abs, frac.to(acc)], dim=1)), (x_dim, 0)


@torch.library.register_vmap("pnn_ext::poly_act_backward")
def _poly_act_backward_vmap(info, in_dims, grad_y, grad_stats, x, coeffs, bound, alpha, basis, coeffs_grad,
                            boundary_form="exp"):
    # One call per sample: L, its gradient's 1/N and the coefficient gradients are
    # per-sample reductions, and the per-sample call gives exactly the unbatched result.
    dims = in_dims[:4]
    outs = [torch.ops.pnn_ext.poly_act_backward(*(_sample(t, d, i) for t, d in zip((grad_y, grad_stats, x, coeffs),
                                                                                     dims)),
                                                bound, alpha, basis, coeffs_grad, boundary_form)
            for i in range(info.batch_size)]
    return (torch.stack([g for g, _ in outs]), torch.stack([c for _, c in outs])), (0, 0)

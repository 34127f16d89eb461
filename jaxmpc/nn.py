"""Neural-network layers on shares, and their plaintext twins.

Parameters are a list of layers ``{"w": (in, out), "b": (out,)}``: plaintext
float32 arrays at the model owner (the server), :class:`SharedTensor` once
shared. The secure forward pass is built from the differentiable ops of
:mod:`jaxmpc.autodiff`, so ``jaxmpc.value_and_grad`` gives encrypted gradients.
"""

from __future__ import annotations

from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmpc import autodiff as ad
from jaxmpc import ring, tensor
from jaxmpc.protocols import arithmetic
from jaxmpc.protocols.arithmetic import Premasked, TruncMethod
from jaxmpc.tensor import SharedTensor

Activation = Literal["relu", "square"]
ACTIVATIONS = ("relu", "square")
Params = list  # list of {"w": array, "b": array}

MNIST_MLP = (784, 128, 64, 10)


def init_mlp(key: jax.Array, sizes: Sequence[int] = MNIST_MLP) -> Params:
    """Plaintext parameters, initialised like PyTorch's ``nn.Linear``:
    ``w, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"an MLP needs at least two positive layer sizes, got {sizes}")
    params = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        kw, kb = jax.random.split(jax.random.fold_in(key, i))
        bound = 1.0 / np.sqrt(fan_in)
        params.append(
            {
                "w": jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound),
                "b": jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound),
            }
        )
    return params


def share_params(
    params: Params, key: jax.Array, n_parties: int, frac_bits: int = ring.DEFAULT_FRAC_BITS
) -> Params:
    """The model owner secret-shares every parameter among the workers."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef, [tensor.share(p, k, n_parties, frac_bits) for p, k in zip(leaves, keys)]
    )


def reconstruct_params(shared: Params) -> Params:
    """The model owner receives every worker's shares and decrypts (float32)."""
    return jax.tree.map(
        lambda s: np.asarray(tensor.reconstruct(s), np.float32),
        shared_params(shared),
        is_leaf=lambda x: isinstance(x, SharedTensor),
    )


def premask_params(params: Params, key: jax.Array, *, split: bool = True) -> Params:
    """Shared parameters with every weight matrix :class:`Premasked`.

    Each shared ``w`` is opened once as ``w - b`` under a dealer mask
    (:func:`jaxmpc.protocols.arithmetic.premask`: 1 round, ``(n-1)*8*|w|``
    bytes per party, once per model); :func:`mlp` then opens only each
    layer's input per batch, and the dealer deals no weight masks. Biases stay
    as they are. For inference (``split``: the weights' float64 limbs cut
    once) and for prescaled SGD (``split=False``), which keeps the weights
    premasked from step to step (see :class:`Premasked`). Weights that are
    premasked already are not opened again, only split.
    """
    keys = jax.random.split(key, len(params))

    def one(w, k):
        if isinstance(w, Premasked):
            return arithmetic.presplit(w) if split else w
        return arithmetic.premask(w, k, split=split)

    return [{**layer, "w": one(layer["w"], k)} for layer, k in zip(params, keys)]


def shared_params(params: Params) -> Params:
    """Every :class:`Premasked` weight back as plain shares (local, ``b_i + [i=0] f``)."""
    def plain(w):
        return w.as_shared() if isinstance(w, Premasked) else w

    return [{**layer, "w": plain(layer["w"])} for layer in params]


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; use one of {ACTIVATIONS}")


def mlp(
    params: Params,
    x: SharedTensor,
    key: jax.Array,
    *,
    activation: Activation = "relu",
    trunc: TruncMethod = "dealer",
    grad_scale: float | None = None,
) -> SharedTensor:
    """Secure forward pass: ``Linear - act - ... - Linear`` on shares, logits out.

    Differentiable (``jaxmpc.value_and_grad``) for shared or
    :func:`premask_params` weights; premasked ones open only each layer's
    input per batch, and the first layer opens nothing when ``x`` is
    premasked too (training data opened once, :func:`jaxmpc.train.training_data`).
    ``grad_scale``: the parameters' gradients come out multiplied by it (a
    learning rate, for ``optim.sgd(..., prescaled=True)``): folded into the
    weight gradients' truncations for free, one truncation per bias element.
    """
    _check_activation(activation)
    if not isinstance(x, (SharedTensor, Premasked)):
        raise TypeError(f"mlp takes a SharedTensor input (share it first), got {type(x).__name__}")
    if len(x.shape) != 2 or x.shape[1] != params[0]["w"].shape[0]:
        raise ValueError(
            f"input shape {x.shape} does not fit the first layer "
            f"(expected (batch, {params[0]['w'].shape[0]}))"
        )
    h = x
    for i, layer in enumerate(params):
        k_lin, k_act, k_b = jax.random.split(jax.random.fold_in(key, i), 3)
        w, b = layer["w"], layer["b"]
        if grad_scale is None:
            h = ad.matmul(h, w, k_lin, trunc=trunc) + b
        else:
            b = ad.scale_grad(b, grad_scale, k_b, trunc=trunc)
            h = ad.matmul(h, w, k_lin, trunc=trunc, w_grad_scale=grad_scale) + b
        if i < len(params) - 1:
            h = ad.relu(h, k_act) if activation == "relu" else ad.square(h, k_act, trunc=trunc)
    return h


def mlp_plain(params: Params, x: jax.Array, *, activation: Activation = "relu") -> jax.Array:
    """The same network in plain JAX (float32)."""
    _check_activation(activation)
    h = x
    for i, layer in enumerate(params):
        h = h @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            h = jax.nn.relu(h) if activation == "relu" else h * h
    return h

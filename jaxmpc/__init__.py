"""jaxmpc: secure multi-party computation by additive secret sharing, in JAX.

Shares are plain data (:class:`SharedTensor`: ``uint64[n_parties, ...]`` plus
static fractional bits); protocols are pure functions of shares and a PRNG
key. The top level re-exports the public API; the layers live in

* :mod:`jaxmpc.ring` -- Z_2^64 and fixed-point encoding,
* :mod:`jaxmpc.tensor` -- the shared tensor, sharing and revealing,
* :mod:`jaxmpc.dealer` -- correlated randomness,
* :mod:`jaxmpc.protocols` -- arithmetic, binary, conversion, comparison, approx,
* :mod:`jaxmpc.autodiff` -- encrypted gradients,
* :mod:`jaxmpc.nn`, :mod:`jaxmpc.losses`, :mod:`jaxmpc.optim` -- training,
* :mod:`jaxmpc.data`, :mod:`jaxmpc.train`, :mod:`jaxmpc.cli` -- the workflow.
"""

import os as _os

import jax as _jax

if not _os.environ.get("JAXMPC_NO_X64"):
    _jax.config.update("jax_enable_x64", True)

from jaxmpc import dealer, losses, nn, optim, ring, spmd  # noqa: E402
from jaxmpc.autodiff import matmul, mul, mul_public, relu, square, value_and_grad  # noqa: E402
from jaxmpc.cost import Cost, cost_of  # noqa: E402
from jaxmpc.protocols.approx import exp, inv_sqrt, log, reciprocal, sigmoid, softmax  # noqa: E402
from jaxmpc.protocols.arithmetic import Premasked, div_public, matmul_public, mean, premask, truncate  # noqa: E402
from jaxmpc.protocols.comparison import (  # noqa: E402
    abs,
    argmax,
    drelu,
    eq,
    ge,
    gt,
    le,
    lt,
    ltz,
    max,
    maximum,
    minimum,
    ne,
    reveal_argmax,
    sign,
)
from jaxmpc.ring import DEFAULT_FRAC_BITS, decode, encode  # noqa: E402
from jaxmpc.tensor import (  # noqa: E402
    SharedTensor,
    concatenate,
    from_public,
    reconstruct,
    reveal,
    reveal_to,
    share,
    stack,
    zeros,
)

__version__ = "0.1.0"

__all__ = [
    "Cost", "DEFAULT_FRAC_BITS", "Premasked", "SharedTensor", "abs", "argmax", "concatenate", "cost_of",
    "dealer", "decode", "div_public", "drelu", "encode", "eq", "exp", "from_public", "ge", "gt",
    "inv_sqrt", "le", "log", "losses", "lt", "ltz", "matmul", "matmul_public", "max", "maximum",
    "mean", "minimum", "mul", "mul_public", "ne", "nn", "optim", "premask", "reciprocal", "reconstruct",
    "relu", "reveal", "reveal_argmax", "reveal_to", "ring", "share", "sigmoid", "sign", "softmax",
    "spmd", "square", "stack", "truncate", "value_and_grad", "zeros",
]

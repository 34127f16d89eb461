"""Plaintext NumPy reference of the jaxmpc core API, for the tests.

Two references of the same API (same function names and signatures as
``jaxmpc.tensor`` and ``jaxmpc.protocols.arithmetic``, same methods as
``SharedTensor``), so that one test function can run on all three:

* this module itself: :class:`PlainTensor` holds the *secret ring element* as a
  NumPy ``uint64`` array (no shares) and computes every op with NumPy's
  wrap-around ``uint64`` arithmetic, i.e. exactly in Z_2^64. Truncation is the
  exact arithmetic shift ``floor(v / 2**bits)``. An MPC result must equal this
  bit for bit for ring ops, and be within 1 unit in the last place for ops that
  truncate (the protocols' truncation is probabilistic to within one unit).
* :data:`real`: the same API on float64 NumPy arrays, the mathematical result
  that fixed point approximates. Truncation is the identity on real values.

Nothing here imports jax or jaxmpc: the reference is independent of the code
under test. Keys are accepted and ignored; ``n_parties`` is recorded only.
"""

from __future__ import annotations

import types
from typing import Any, Sequence

import numpy as np

RING_DTYPE = np.uint64
DEFAULT_FRAC_BITS = 16
ENCODE_LIMIT = 2**62


# ------------------------------------------------------------------ the ring


def _u64(v) -> np.ndarray:
    """As a uint64 ndarray (0-d arrays stay arrays, never NumPy scalars)."""
    return np.asarray(v, dtype=RING_DTYPE)


def to_signed(u) -> np.ndarray:
    """uint64 -> int64, two's complement, bit for bit."""
    return _u64(u).view(np.int64)


def from_signed(s) -> np.ndarray:
    """int64 -> uint64, bit for bit."""
    return np.asarray(s, dtype=np.int64).view(RING_DTYPE)


def ring(k) -> np.ndarray:
    """Integers (any integer dtype or Python int) as ring elements mod 2**64."""
    k = np.asarray(k)
    if k.dtype == RING_DTYPE:
        return k
    if k.dtype.kind not in "iub":
        raise TypeError(f"ring() takes integers, got {k.dtype}")
    return k.astype(np.int64).view(RING_DTYPE)


def ring_add(a, b) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _u64(np.add(_u64(a), _u64(b), dtype=RING_DTYPE))


def ring_sub(a, b) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _u64(np.subtract(_u64(a), _u64(b), dtype=RING_DTYPE))


def ring_neg(a) -> np.ndarray:
    return ring_sub(np.zeros_like(_u64(a)), a)


def ring_mul(a, b) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _u64(np.multiply(_u64(a), _u64(b), dtype=RING_DTYPE))


def ring_matmul(a, b) -> np.ndarray:
    """Matrix product mod 2**64. NumPy's integer matmul does not use BLAS: it
    multiplies and accumulates in uint64 with C wrap-around, i.e. in the ring
    (checked against Python integers in the tests)."""
    with np.errstate(over="ignore"):
        return _u64(np.matmul(_u64(a), _u64(b)))


def ring_sum(a, axis=None, keepdims=False) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _u64(np.sum(_u64(a), axis=axis, dtype=RING_DTYPE, keepdims=keepdims))


def ashr(a, bits: int) -> np.ndarray:
    """Arithmetic (signed) shift right: ``floor(a / 2**bits)`` on the signed reading."""
    return from_signed(to_signed(a) >> np.int64(bits))


def open_shares(shares) -> np.ndarray:
    """The secret held by stacked shares ``(n_parties, *shape)``: their sum mod 2**64."""
    return ring_sum(np.asarray(shares), axis=0)


# ------------------------------------------------------------ fixed point


def max_abs(frac_bits: int) -> float:
    return ENCODE_LIMIT / 2.0**frac_bits


def encode(x, frac_bits: int = DEFAULT_FRAC_BITS) -> np.ndarray:
    """``round(x * 2**f)`` (half to even, like ``jnp.round``) in two's complement."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("non-finite value")
    if x.size and np.max(np.abs(x)) >= max_abs(frac_bits):
        raise ValueError(f"out of range |x| < 2**{62 - frac_bits}")
    return from_signed(np.round(x * 2.0**frac_bits).astype(np.int64))


def decode(u, frac_bits: int = DEFAULT_FRAC_BITS) -> np.ndarray:
    return to_signed(u).astype(np.float64) / 2.0**frac_bits


# ------------------------------------------------- the API on plain secrets


class PlainTensor:
    """The secret of a ``SharedTensor`` in the clear: ring value + fractional bits."""

    # Let NumPy defer to our reflected operators (``ndarray + PlainTensor``).
    __array_ufunc__ = None

    def __init__(self, value, frac_bits: int = DEFAULT_FRAC_BITS, n_parties: int = 2):
        self.value = _u64(value)
        self.frac_bits = int(frac_bits)
        self.n_parties = int(n_parties)

    def _with(self, value, frac_bits: int | None = None) -> "PlainTensor":
        return PlainTensor(value, self.frac_bits if frac_bits is None else frac_bits, self.n_parties)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    @property
    def ndim(self) -> int:
        return self.value.ndim

    @property
    def size(self) -> int:
        return int(self.value.size)

    def __repr__(self) -> str:
        return f"PlainTensor(shape={self.shape}, frac_bits={self.frac_bits})"

    # linear
    def __add__(self, other: Any) -> "PlainTensor":
        if isinstance(other, PlainTensor):
            return self._with(ring_add(self.value, other.value))
        return self._with(ring_add(self.value, encode(other, self.frac_bits)))

    __radd__ = __add__

    def __neg__(self) -> "PlainTensor":
        return self._with(ring_neg(self.value))

    def __sub__(self, other: Any) -> "PlainTensor":
        if isinstance(other, PlainTensor):
            return self._with(ring_sub(self.value, other.value))
        return self._with(ring_sub(self.value, encode(other, self.frac_bits)))

    def __rsub__(self, other: Any) -> "PlainTensor":
        return self._with(ring_sub(encode(other, self.frac_bits), self.value))

    def __mul__(self, k: Any) -> "PlainTensor":
        if isinstance(k, PlainTensor):
            raise TypeError("secret * secret: use mul(x, y, key)")
        k = np.asarray(k)
        if k.dtype.kind not in "iub":
            raise TypeError("non-integer factor: use mul_public")
        return self._with(ring_mul(self.value, ring(k)))

    __rmul__ = __mul__

    # structural
    def reshape(self, *shape) -> "PlainTensor":
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        return self._with(self.value.reshape(shape))

    def transpose(self, *axes) -> "PlainTensor":
        if len(axes) == 1 and not isinstance(axes[0], (int, np.integer)):
            axes = tuple(axes[0])
        return self._with(np.transpose(self.value, axes or None))

    @property
    def T(self) -> "PlainTensor":
        return self.transpose()

    def __getitem__(self, index) -> "PlainTensor":
        return self._with(self.value[index])

    def sum(self, axis=None, keepdims: bool = False) -> "PlainTensor":
        if isinstance(axis, list):
            axis = tuple(axis)
        return self._with(ring_sum(self.value, axis=axis, keepdims=keepdims))

    def broadcast_to(self, shape) -> "PlainTensor":
        return self._with(np.broadcast_to(self.value, tuple(shape)))

    def expand_dims(self, axis: int) -> "PlainTensor":
        return self._with(np.expand_dims(self.value, axis))

    def squeeze(self, axis=None) -> "PlainTensor":
        return self._with(np.squeeze(self.value, axis))


def share(x, key=None, n_parties: int = 2, frac_bits: int = DEFAULT_FRAC_BITS) -> PlainTensor:
    return PlainTensor(encode(x, frac_bits), frac_bits, n_parties)


def from_public(x, n_parties: int, frac_bits: int = DEFAULT_FRAC_BITS) -> PlainTensor:
    return PlainTensor(encode(x, frac_bits), frac_bits, n_parties)


def reveal(x: PlainTensor) -> np.ndarray:
    return decode(x.value, x.frac_bits)


def reveal_to(x: PlainTensor, owner: int) -> np.ndarray:
    return reveal(x)


def concatenate(xs: Sequence[PlainTensor], axis: int = 0) -> PlainTensor:
    return xs[0]._with(np.concatenate([x.value for x in xs], axis=axis))


def stack(xs: Sequence[PlainTensor], axis: int = 0) -> PlainTensor:
    return xs[0]._with(np.stack([x.value for x in xs], axis=axis))


def broadcast_to(x: PlainTensor, shape) -> PlainTensor:
    return x.broadcast_to(shape)


def truncate(x: PlainTensor, key=None, bits: int | None = None, *, method: str = "dealer") -> PlainTensor:
    """Exact: ``floor(v / 2**bits)``. The protocols are within one unit of this."""
    if bits is None:
        bits = x.frac_bits // 2
    return x._with(ashr(x.value, bits), x.frac_bits - bits)


def _product(x: PlainTensor, y: PlainTensor, value, trunc: str) -> PlainTensor:
    prod = x._with(value, x.frac_bits + y.frac_bits)
    return truncate(prod, None, min(x.frac_bits, y.frac_bits), method=trunc)


def mul(x: PlainTensor, y: PlainTensor, key=None, *, trunc: str = "dealer") -> PlainTensor:
    return _product(x, y, ring_mul(x.value, y.value), trunc)


def matmul(x: PlainTensor, y: PlainTensor, key=None, *, trunc: str = "dealer") -> PlainTensor:
    return _product(x, y, ring_matmul(x.value, y.value), trunc)


def square(x: PlainTensor, key=None, *, trunc: str = "dealer") -> PlainTensor:
    return _product(x, x, ring_mul(x.value, x.value), trunc)


def _encode_public(c, frac_bits: int) -> tuple[np.ndarray, int]:
    c = np.asarray(c)
    if c.dtype.kind in "iub":
        return ring(c), 0
    return encode(c, frac_bits), frac_bits


def mul_public(x: PlainTensor, c, key=None, *, trunc: str = "dealer") -> PlainTensor:
    enc, bits = _encode_public(c, x.frac_bits)
    prod = x._with(ring_mul(x.value, enc), x.frac_bits + bits)
    return truncate(prod, None, bits) if bits else prod


def div_public(x: PlainTensor, c, key=None, *, trunc: str = "dealer") -> PlainTensor:
    return mul_public(x, 1.0 / np.asarray(c, dtype=np.float64), key, trunc=trunc)


def matmul_public(x: PlainTensor, p, key=None, *, trunc: str = "dealer") -> PlainTensor:
    enc, bits = _encode_public(p, x.frac_bits)
    prod = x._with(ring_matmul(x.value, enc), x.frac_bits + bits)
    return truncate(prod, None, bits) if bits else prod


def mean(x: PlainTensor, key=None, axis=None, *, trunc: str = "dealer") -> PlainTensor:
    total = x.sum(axis)
    count = x.size // max(total.size, 1)
    return mul_public(total, 1.0 / count, key, trunc=trunc)


# ------------------------------------------------ the API on real numbers


def _real_mean(x, key=None, axis=None, *, trunc: str = "dealer"):
    return np.mean(np.asarray(x, dtype=np.float64), axis=axis)


#: The same API on float64 arrays: what the fixed-point results approximate.
real = types.SimpleNamespace(
    share=lambda x, key=None, n_parties=2, frac_bits=DEFAULT_FRAC_BITS: np.asarray(x, np.float64),
    from_public=lambda x, n_parties, frac_bits=DEFAULT_FRAC_BITS: np.asarray(x, np.float64),
    reveal=lambda x: np.asarray(x, np.float64),
    reveal_to=lambda x, owner: np.asarray(x, np.float64),
    concatenate=lambda xs, axis=0: np.concatenate(xs, axis=axis),
    stack=lambda xs, axis=0: np.stack(xs, axis=axis),
    broadcast_to=lambda x, shape: np.broadcast_to(x, tuple(shape)),
    truncate=lambda x, key=None, bits=None, *, method="dealer": x,
    mul=lambda x, y, key=None, *, trunc="dealer": np.multiply(x, y),
    matmul=lambda x, y, key=None, *, trunc="dealer": np.matmul(x, y),
    square=lambda x, key=None, *, trunc="dealer": np.multiply(x, x),
    mul_public=lambda x, c, key=None, *, trunc="dealer": np.multiply(x, c),
    div_public=lambda x, c, key=None, *, trunc="dealer": np.divide(x, c),
    matmul_public=lambda x, p, key=None, *, trunc="dealer": np.matmul(x, p),
    mean=_real_mean,
)

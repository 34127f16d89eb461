"""The secret-shared fixed-point tensor.

A :class:`SharedTensor` is plain data: a JAX pytree whose one leaf holds the
shares stacked on a leading party axis, ``uint64[n_parties, *shape]``, and
whose static metadata is the number of fractional bits. The secret is the sum
of the shares mod 2**64, read as a fixed-point number.

Local operations (no communication, no randomness) live here as methods:
``+``, ``-``, negation, multiplication by public *integers*, reshaping,
indexing, sums over axes. Anything that multiplies by a non-integer or by
another secret needs dealer randomness and a ``key``; those are functions in
:mod:`jaxmpc.protocols`.

During differentiation (:mod:`jaxmpc.autodiff`) the same class holds a
complex128 *carrier* of the shares instead, in one of two encodings:

* values (primal): the uint64 bits themselves, bitcast to the real part
  (:func:`to_value_carrier`); converting back and forth is free, and XLA
  removes it altogether;
* tangents and cotangents: real part = high 32 bits, imaginary part = low 32
  bits, both exact integers (:func:`to_carrier`), so JAX's own cotangent
  arithmetic (``ct_1 + ct_2`` when a value is used twice, sums, negation) is
  exact ring arithmetic.

The local operations below move value carriers freely (reshape, index,
broadcast) and compute on them only through :func:`linear_on_carriers`,
which adds, negates or sums on the ring and gives JAX the same linear map for
the tangents.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmpc import ring, spmd

CARRIER_DTYPE = jnp.complex128


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SharedTensor:
    """Additive shares of a fixed-point tensor, stacked on a leading party axis.

    Attributes:
      shares: ``uint64[n_parties, *shape]`` (or the complex128 carrier while
        differentiating).
      frac_bits: fractional bits of the fixed-point encoding (static).
    """

    shares: jax.Array
    frac_bits: int = dataclasses.field(metadata=dict(static=True), default=ring.DEFAULT_FRAC_BITS)

    # numpy_array + shared defers to our __radd__ instead of looping elementwise
    __array_ufunc__ = None

    # ----------------------------------------------------------------- shape
    @property
    def n_parties(self) -> int:
        return int(self.shares.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.shares.shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def is_carrier(self) -> bool:
        return self.shares.dtype == CARRIER_DTYPE

    def __repr__(self) -> str:
        kind = "carrier" if self.is_carrier else "uint64"
        return (
            f"SharedTensor(shape={self.shape}, n_parties={self.n_parties}, "
            f"frac_bits={self.frac_bits}, shares={kind})"
        )

    def _with(self, shares: jax.Array, frac_bits: int | None = None) -> "SharedTensor":
        return SharedTensor(shares, self.frac_bits if frac_bits is None else frac_bits)

    # ------------------------------------------------------ linear, local
    def __add__(self, other: Any) -> "SharedTensor":
        if isinstance(other, SharedTensor):
            check_compatible(self, other)
            a, b = _common_repr(_align(self, other.ndim), _align(other, self.ndim))
            return self._with(linear_on_carriers(jnp.add, a, b))
        return add_public(self, other)

    __radd__ = __add__

    def __neg__(self) -> "SharedTensor":
        return self._with(linear_on_carriers(negate_words, self.shares))

    def __sub__(self, other: Any) -> "SharedTensor":
        if isinstance(other, SharedTensor):
            return self + (-other)
        return add_public(self, other, negate=True)

    def __rsub__(self, other: Any) -> "SharedTensor":
        return add_public(-self, other)

    def __mul__(self, other: Any) -> "SharedTensor":
        """Multiplication by a public *integer* (exact, local, no truncation)."""
        if isinstance(other, SharedTensor):
            raise TypeError(
                "secret * secret needs dealer randomness: use jaxmpc.mul(x, y, key)"
            )
        k = np.asarray(other) if not isinstance(other, jax.Array) else other
        if k.dtype.kind not in "iub":
            raise TypeError(
                f"SharedTensor * {k.dtype} needs a truncation after the product: use "
                "jaxmpc.mul_public(x, c, key) for non-integer public factors"
            )
        if self.is_carrier:
            raise TypeError(
                "integer scaling of a carrier (inside jaxmpc.value_and_grad) is not exact; "
                "use jaxmpc.mul_public(x, c, key) instead"
            )
        kr = ring.ring(k)
        _check_broadcast(self.shape, kr.shape)
        return self._with(_align(self, kr.ndim) * kr)

    __rmul__ = __mul__

    def __truediv__(self, other: Any):
        raise TypeError(
            "division by a public value truncates: use jaxmpc.mul_public(x, 1 / c, key); "
            "division by a secret: jaxmpc.reciprocal"
        )

    # ------------------------------------------------------ structural, local
    def reshape(self, *shape: int | Sequence[int]) -> "SharedTensor":
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        return self._with(self.shares.reshape((self.n_parties,) + tuple(shape)))

    def transpose(self, *axes: int) -> "SharedTensor":
        if len(axes) == 1 and not isinstance(axes[0], (int, np.integer)):
            axes = tuple(axes[0])
        axes = tuple(range(self.ndim))[::-1] if not axes else tuple(_axis(a, self.ndim) for a in axes)
        return self._with(self.shares.transpose((0,) + tuple(a + 1 for a in axes)))

    @property
    def T(self) -> "SharedTensor":
        return self.transpose()

    def __getitem__(self, index: Any) -> "SharedTensor":
        if not isinstance(index, tuple):
            index = (index,)
        if any(isinstance(i, SharedTensor) for i in index):
            raise TypeError("indexing by a secret is not supported; use a one-hot mul")
        return self._with(self.shares[(slice(None),) + index])

    def sum(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> "SharedTensor":
        if axis is None:
            axis = tuple(range(self.ndim))
        elif isinstance(axis, (int, np.integer)):
            axis = (axis,)
        axes = tuple(_axis(a, self.ndim) + 1 for a in axis)
        return self._with(
            linear_on_carriers(lambda s: jnp.sum(s, axis=axes, keepdims=keepdims, dtype=s.dtype), self.shares)
        )

    def broadcast_to(self, shape: Sequence[int]) -> "SharedTensor":
        _check_broadcast(self.shape, tuple(shape), target=True)
        return self._with(jnp.broadcast_to(_align(self, len(shape)), (self.n_parties,) + tuple(shape)))

    def expand_dims(self, axis: int) -> "SharedTensor":
        return self._with(jnp.expand_dims(self.shares, _axis(axis, self.ndim + 1) + 1))

    def squeeze(self, axis: int | None = None) -> "SharedTensor":
        if axis is None:
            axes = tuple(i + 1 for i, d in enumerate(self.shape) if d == 1)
        else:
            axes = (_axis(axis, self.ndim) + 1,)
        return self._with(jnp.squeeze(self.shares, axis=axes))


# --------------------------------------------------------------------- helpers


def _axis(a: int, ndim: int) -> int:
    a = int(a)
    if not -ndim <= a < ndim:
        raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
    return a % ndim


def _check_broadcast(a: tuple, b: tuple, target: bool = False) -> None:
    try:
        out = np.broadcast_shapes(a, b)
    except ValueError:
        raise ValueError(f"shapes {a} and {b} do not broadcast") from None
    if target and out != tuple(b):
        raise ValueError(f"cannot broadcast shape {a} to {b}")


def check_compatible(*xs: SharedTensor, broadcast: bool = True) -> None:
    """Raise if tensors mix party counts or fixed-point precisions (or shapes that don't broadcast)."""
    first = xs[0]
    for x in xs[1:]:
        if x.n_parties != first.n_parties:
            raise ValueError(
                f"tensors are shared among different numbers of parties "
                f"({first.n_parties} and {x.n_parties}); share them among the same parties"
            )
        if x.frac_bits != first.frac_bits:
            raise ValueError(
                f"tensors have different fixed-point precisions (frac_bits {first.frac_bits} "
                f"and {x.frac_bits}); re-encode one of them (jaxmpc.truncate lowers precision)"
            )
        if broadcast:
            _check_broadcast(first.shape, x.shape)


def to_carrier(u: jax.Array) -> jax.Array:
    """uint64 -> additive complex128 carrier (tangents): real = high 32 bits, imag = low 32 bits."""
    hi = (u >> jnp.uint64(32)).astype(jnp.float64)
    lo = (u & jnp.uint64(0xFFFFFFFF)).astype(jnp.float64)
    return jax.lax.complex(hi, lo)


def from_carrier(c: jax.Array) -> jax.Array:
    """complex128 carrier -> uint64; any exact integers in real/imag parts are allowed."""
    hi = ring.from_signed(jnp.real(c).astype(jnp.int64))
    lo = ring.from_signed(jnp.imag(c).astype(jnp.int64))
    return (hi << jnp.uint64(32)) + lo


def to_value_carrier(u: jax.Array) -> jax.Array:
    """uint64 -> value carrier: the bits as the real part (imaginary part 0).

    Not additive: only moved, or computed on through :func:`linear_on_carriers`."""
    return jax.lax.complex(jax.lax.bitcast_convert_type(u, jnp.float64), jnp.zeros(u.shape, jnp.float64))


def from_value_carrier(c: jax.Array) -> jax.Array:
    """Value carrier -> uint64 (the inverse of :func:`to_value_carrier`)."""
    return jax.lax.bitcast_convert_type(jnp.real(c), jnp.uint64)


def negate_words(s: jax.Array) -> jax.Array:
    """``-s`` on uint64 words (mod 2**64) and on additive carriers alike."""
    return jnp.zeros_like(s) - s


def linear_on_carriers(fn, *xs: jax.Array, offset: jax.Array | None = None) -> jax.Array:
    """``fn(*xs) (+ offset)`` for an additive ``fn`` (sums, negation: ``jnp``
    ops exact on uint64 and on additive carriers) and an optional public uint64
    ``offset`` of the output's shape, which has no tangent.

    On uint64 shares it is just that. On value carriers it decodes, computes on
    the ring and encodes again, and, as a ``custom_jvp``, tells JAX that the
    tangent map is ``fn`` itself, which JAX transposes into exact cotangent
    arithmetic on additive carriers.
    """
    if xs[0].dtype != CARRIER_DTYPE:
        out = fn(*xs)
        return out if offset is None else out + offset

    @jax.custom_jvp
    def op(off, *cs):
        out = fn(*map(from_value_carrier, cs))
        return to_value_carrier(out if off is None else out + off)

    @op.defjvp
    def _jvp(primals, tangents):
        return op(*primals), fn(*tangents[1:])

    return op(offset, *xs)


def _align(x: SharedTensor, ndim: int) -> jax.Array:
    """Shares with singleton axes inserted after the party axis, so that
    numpy broadcasting of ``(n, *shape)`` arrays follows ``shape`` alone."""
    missing = ndim - x.ndim
    if missing <= 0:
        return x.shares
    return x.shares.reshape((x.n_parties,) + (1,) * missing + x.shape)


def _common_repr(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    if a.dtype == b.dtype:
        return a, b
    if a.dtype == CARRIER_DTYPE:
        return a, to_value_carrier(b)
    return to_value_carrier(a), b


def add_public(x: SharedTensor, p: Any, *, negate: bool = False) -> SharedTensor:
    """``x + p`` (or ``x - p``) for a public real ``p``: party 0 adds the encoding of ``p``."""
    enc = ring.encode(p, x.frac_bits)
    if negate:
        enc = jnp.zeros_like(enc) - enc
    _check_broadcast(x.shape, enc.shape)
    shape = np.broadcast_shapes(x.shape, enc.shape)
    shares = jnp.broadcast_to(_align(x, len(shape)), (x.n_parties,) + shape)
    offset = jnp.zeros((x.n_parties,) + shape, ring.RING_DTYPE).at[0].set(jnp.broadcast_to(enc, shape))
    return x._with(linear_on_carriers(lambda s: s, shares, offset=offset))


# ---------------------------------------------------------- sharing, revealing


def _check_n_parties(n_parties: int) -> int:
    if isinstance(n_parties, bool) or not isinstance(n_parties, (int, np.integer)):
        raise TypeError(f"n_parties must be an int, got {type(n_parties).__name__}")
    if n_parties < 2:
        raise ValueError(f"secret sharing needs at least 2 parties, got n_parties={n_parties}")
    return int(n_parties)


def split(key: jax.Array, secret: jax.Array, n_parties: int) -> jax.Array:
    """Additive shares of ring elements: ``n-1`` uniform shares and one correction.

    Share ``i < n-1`` is drawn from ``fold_in(key, i)`` alone; the last share is
    ``secret - sum(others)``. Any ``n-1`` shares are uniform and independent of
    the secret.
    """
    n_parties = _check_n_parties(n_parties)
    secret = jnp.asarray(secret, ring.RING_DTYPE)
    rand = jnp.stack(
        [ring.random_ring(jax.random.fold_in(key, i), secret.shape) for i in range(n_parties - 1)]
    )
    last = secret - jnp.sum(rand, axis=0, dtype=ring.RING_DTYPE)
    return jnp.concatenate([rand, last[None]], axis=0)


def share(
    x: Any, key: jax.Array, n_parties: int = 2, frac_bits: int = ring.DEFAULT_FRAC_BITS
) -> SharedTensor:
    """Secret-share a plaintext real array among ``n_parties`` with fresh randomness.

    The caller is the data owner; afterwards only the shares exist. Values must
    be finite and within ``|x| < 2**(62 - frac_bits)`` (checked for concrete
    inputs; see :func:`jaxmpc.ring.encode`).
    """
    x = jnp.asarray(x) if isinstance(x, jax.Array) else np.asarray(x)
    if x.size == 0:
        raise ValueError(f"cannot share an empty array (shape {x.shape})")
    return SharedTensor(split(key, ring.encode(x, frac_bits), n_parties), ring.check_frac_bits(frac_bits))


def from_public(x: Any, n_parties: int, frac_bits: int = ring.DEFAULT_FRAC_BITS) -> SharedTensor:
    """A public value as a (trivial) sharing: party 0 holds the encoding, others 0."""
    enc = ring.encode(x, frac_bits)
    n_parties = _check_n_parties(n_parties)
    zeros = jnp.zeros((n_parties - 1,) + enc.shape, ring.RING_DTYPE)
    return SharedTensor(jnp.concatenate([enc[None], zeros]), frac_bits)


def zeros(shape: Sequence[int], n_parties: int, frac_bits: int = ring.DEFAULT_FRAC_BITS) -> SharedTensor:
    n_parties = _check_n_parties(n_parties)
    return SharedTensor(jnp.zeros((n_parties,) + tuple(shape), ring.RING_DTYPE), frac_bits)


def concatenate(xs: Sequence[SharedTensor], axis: int = 0) -> SharedTensor:
    check_compatible(*xs, broadcast=False)
    ax = _axis(axis, xs[0].ndim) + 1
    others = {x.shape[: ax - 1] + x.shape[ax:] for x in xs}
    if len(others) != 1 or len({x.ndim for x in xs}) != 1:
        raise ValueError(
            f"cannot concatenate shapes {[x.shape for x in xs]} along axis {axis}: "
            "all other dimensions must match"
        )
    return xs[0]._with(jnp.concatenate([x.shares for x in xs], axis=ax))


def stack(xs: Sequence[SharedTensor], axis: int = 0) -> SharedTensor:
    check_compatible(*xs)
    ax = _axis(axis, xs[0].ndim + 1) + 1
    return xs[0]._with(jnp.stack([x.shares for x in xs], axis=ax))


def reveal(x: SharedTensor, *, what: str = "reveal") -> jax.Array:
    """Open ``x`` to every party and decode it: float64 plaintext.

    One round, ``(n-1) * 8`` bytes per element per party; recorded as an
    unmasked opening (the user asked for this value).
    """
    _require_ring(x)
    opened = spmd.party_map(lambda s: spmd.open_sum(s, what=what, masked=False))(x.shares)
    return ring.decode(opened[0], x.frac_bits)


def reveal_to(x: SharedTensor, owner: int, *, what: str = "reveal_to") -> jax.Array:
    """Send every share of ``x`` to party ``owner`` only, who decodes it.

    One round; each other party sends 8 bytes per element. In simulation the
    plaintext is returned to the caller, who stands for ``owner``.
    """
    _require_ring(x)
    if isinstance(owner, bool) or not isinstance(owner, (int, np.integer)):
        raise TypeError(f"owner must be a party index (int), got {owner!r}")
    if not 0 <= owner < x.n_parties:
        raise ValueError(f"owner={owner} is not a party (0..{x.n_parties - 1})")
    opened = spmd.party_map(lambda s: spmd.send_to(s, owner, what=what))(x.shares)
    return ring.decode(opened[owner], x.frac_bits)


def _require_ring(x: SharedTensor) -> None:
    if not isinstance(x, SharedTensor):
        raise TypeError(f"expected a SharedTensor, got {type(x).__name__}")
    if x.is_carrier:
        raise TypeError(
            "cannot open a value inside jaxmpc.value_and_grad; return it as an auxiliary "
            "output and reveal it afterwards"
        )


def reconstruct(x: SharedTensor) -> np.ndarray:
    """Decrypt at a receiver outside the computation (e.g. the model owner).

    Every party sends its shares (8 bytes per element each) to the receiver,
    who sums them. Runs outside ``party_map``: no collective, no recording.
    """
    _require_ring(x)
    total = jnp.sum(x.shares, axis=0, dtype=ring.RING_DTYPE)
    return np.asarray(ring.decode(total, x.frac_bits))

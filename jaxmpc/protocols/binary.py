"""XOR (binary) sharing of packed 64-bit words, secure AND, and bit circuits.

A :class:`SharedBits` holds XOR shares of 64 bits per ``uint64`` word,
stacked on the same leading party axis as :class:`~jaxmpc.tensor.SharedTensor`:
the secret is the XOR of the shares. XOR, NOT, shifts and AND with a public
word are local; AND of two secrets (:func:`and_bb`) is Beaver's protocol over
GF(2)^64 with a dealer AND triple: 1 round, 64 AND gates per word.

Bit circuits are written once against ``and_fn`` / ``xor_fn`` arguments
(secret AND, secret XOR); shifts and ANDs with public masks are plain
``<<``, ``>>``, ``&``: linear, so they act on plaintext words and XOR shares
alike. The same circuit then runs

* on plaintext words with :func:`and_plain` / :func:`xor_plain` (tests), and
* securely inside one :func:`jaxmpc.spmd.party_map`: :func:`circuit_triples`
  traces the circuit on plaintext to find the shape of every AND layer, the
  dealer makes the triples outside (one flat triple, cut into one per layer),
  and :func:`run_local` hands the circuit a :class:`TripleFeed` whose calls
  each consume the next triple. Each ``and_fn`` call is one round, so a
  circuit batches independent ANDs of a layer into one call (stacking).

Here: the adder circuits (Kogge-Stone, carry-save). Circuits on the ``n``
parties' shares (a2b's sum, the sign bit, the all-ones test) are in
:mod:`jaxmpc.protocols.conversion`; the bit-sliced carry tree of ``ltz``
(64 elements per word) in :mod:`jaxmpc.bitslice`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from jaxmpc import dealer, spmd, tensor
from jaxmpc.protocols.arithmetic import _check_key

AndFn = Callable[[jax.Array, jax.Array], jax.Array]
XorFn = Callable[[jax.Array, jax.Array], jax.Array]
U64 = jnp.uint64


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SharedBits:
    """XOR shares of packed bits: ``shares`` is ``uint64[n_parties, *shape]``."""

    shares: jax.Array

    @property
    def n_parties(self) -> int:
        return int(self.shares.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.shares.shape[1:])

    def __xor__(self, other: Any) -> "SharedBits":
        return xor_bb(self, other) if isinstance(other, SharedBits) else xor_bp(self, other)

    __rxor__ = __xor__

    def __and__(self, other: Any) -> "SharedBits":
        if isinstance(other, SharedBits):
            raise TypeError("secret & secret needs a dealer triple: use and_bb(x, y, key)")
        return and_bp(self, other)

    __rand__ = __and__

    def __invert__(self) -> "SharedBits":
        return not_b(self)

    def __lshift__(self, bits: int) -> "SharedBits":
        return SharedBits(self.shares << U64(bits))

    def __rshift__(self, bits: int) -> "SharedBits":
        return SharedBits(self.shares >> U64(bits))


# ------------------------------------------------------------ local operations


def _word(p: Any) -> jax.Array:
    p = jnp.asarray(p % 2**64, U64) if isinstance(p, int) else jnp.asarray(p)
    if p.dtype.kind not in "iub":
        raise TypeError(f"public words must be integers, got {p.dtype}")
    return p.astype(U64) if p.dtype != U64 else p


def xor_bb(x: SharedBits, y: SharedBits) -> SharedBits:
    """``x ^ y`` of two secrets: each party XORs its shares (local)."""
    if x.n_parties != y.n_parties:
        raise ValueError(f"XOR of words shared among {x.n_parties} and {y.n_parties} parties")
    return SharedBits(x.shares ^ y.shares)


def xor_bp(x: SharedBits, p: Any) -> SharedBits:
    """``x ^ p`` for a public word ``p``: party 0 XORs it in (local)."""
    p = _word(p)
    shares = jnp.broadcast_to(x.shares, (x.n_parties,) + jnp.broadcast_shapes(x.shape, p.shape))
    return SharedBits(shares.at[0].set(shares[0] ^ p))


def not_b(x: SharedBits) -> SharedBits:
    """Bitwise NOT: party 0 flips all 64 bits of its share (local)."""
    return xor_bp(x, jnp.uint64(2**64 - 1))


def and_bp(x: SharedBits, p: Any) -> SharedBits:
    """``x & p`` for a public word ``p``: every party ANDs its share (local)."""
    return SharedBits(x.shares & _word(p))


def share_bits(words: Any, key: jax.Array, n_parties: int = 2) -> SharedBits:
    """XOR-share public/plaintext ``uint64`` words: ``n-1`` uniform shares and a correction."""
    words, n_parties = _word(words), tensor._check_n_parties(n_parties)
    rand = jax.random.bits(key, (n_parties - 1,) + words.shape, U64)
    last = jax.lax.reduce(rand, U64(0), jax.lax.bitwise_xor, (0,)) ^ words
    return SharedBits(jnp.concatenate([rand, last[None]]))


def reveal_bits(x: SharedBits, *, what: str = "reveal_bits") -> jax.Array:
    """Open ``x`` to every party (1 round, ``(n-1)*8`` bytes per word per party)."""
    return spmd.party_map(lambda s: spmd.open_xor(s, what=what, masked=False))(x.shares)[0]


# ------------------------------------------------------------ secure AND


def and_plain(x: jax.Array, y: jax.Array) -> jax.Array:
    """Plaintext AND: the ``and_fn`` that runs a circuit on cleartext words."""
    return x & y


def xor_plain(x: jax.Array, y: jax.Array) -> jax.Array:
    """XOR: the ``xor_fn`` for plaintext words and for XOR shares alike."""
    return x ^ y


def and_bb_local(x: jax.Array, y: jax.Array, a: jax.Array, b: jax.Array, c: jax.Array) -> jax.Array:
    """One party's share of ``x & y`` from an AND triple ``c = a & b`` [Beaver91, over GF(2)].

    Math: ``x&y = c ^ (d&b) ^ (e&a) ^ (d&e)`` with ``d = x^a``, ``e = y^b``.
    Steps: open ``d`` and ``e`` together (``open_xor``), then
    ``z_i = c_i ^ (d & b_i) ^ (e & a_i) ^ [i = 0](d & e)``.
    Opened: ``d``, ``e``, uniform because ``a``, ``b`` are.
    Cost: 1 round; ``2 * (n-1) * 8`` bytes per word per party (64 gates).
    """
    d, e = spmd.open_xor((x ^ a, y ^ b), what="and")
    lead = jnp.where(spmd.is_party(0), d & e, jnp.zeros_like(d))
    return c ^ (d & b) ^ (e & a) ^ lead


class TripleFeed:
    """A per-party secure ``and_fn``: each call consumes the next dealer triple.

    Built inside :func:`jaxmpc.spmd.party_map` from this party's shares of the
    triples made by :func:`circuit_triples`; one call = one round. The feed is
    an ordinary local object (no global state); :meth:`finish` checks that the
    circuit used exactly the triples it was given.
    """

    def __init__(self, triples: Sequence[dealer.Triple]):
        self._triples, self._used = tuple(triples), 0

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        if self._used >= len(self._triples):
            raise RuntimeError("the circuit made more AND calls than it has triples for")
        t = self._triples[self._used]
        self._used += 1
        shape = jnp.broadcast_shapes(x.shape, y.shape)
        if shape != t.a.shape:
            raise ValueError(f"AND layer of shape {shape} got a triple of shape {t.a.shape}")
        x, y = jnp.broadcast_to(x, shape), jnp.broadcast_to(y, shape)
        return and_bb_local(x, y, t.a, t.b, t.c)

    def finish(self) -> None:
        if self._used != len(self._triples):
            raise RuntimeError(f"the circuit used {self._used} of {len(self._triples)} triples")


def and_layer_shapes(circuit: Callable, *args: Any) -> tuple[tuple[int, ...], ...]:
    """Shapes of the ``and_fn`` calls of ``circuit(*args, and_fn, xor_fn)``, in order.

    ``args`` are pytrees of arrays or ``jax.ShapeDtypeStruct``; the circuit is
    traced abstractly on plaintext words, so nothing runs and nothing is opened.
    """
    shapes: list[tuple[int, ...]] = []

    def recording_and(x, y):
        shapes.append(tuple(jnp.broadcast_shapes(x.shape, y.shape)))
        return x & y

    jax.eval_shape(lambda *a: circuit(*a, recording_and, xor_plain), *args)
    return tuple(shapes)


def circuit_triples(
    key: jax.Array, n_parties: int, circuit: Callable, *args: Any
) -> tuple[dealer.Triple, ...]:
    """The dealer's AND triples for every AND layer of ``circuit`` on words like ``args``."""
    shapes = and_layer_shapes(circuit, *args)
    sizes = [math.prod(s) for s in shapes]
    # One flat triple, cut into layers: the same correlation, and one PRNG
    # expansion instead of one per layer (XLA compiles each expansion anew).
    flat = dealer.and_triple(key, n_parties, (sum(sizes),))
    ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    return tuple(
        dealer.Triple(*(w[:, e - z : e].reshape((n_parties,) + s) for w in flat))
        for s, z, e in zip(shapes, sizes, ends)
    )


def run_local(circuit: Callable, triples: Sequence[dealer.Triple], *args: Any) -> Any:
    """Run ``circuit`` on this party's XOR shares (in ``party_map``), ANDs by a TripleFeed."""
    feed = TripleFeed(triples)
    out = circuit(*args, feed, xor_plain)
    feed.finish()
    return out


def words_like(shape: Sequence[int]) -> jax.ShapeDtypeStruct:
    """An abstract ``uint64`` word array, for :func:`circuit_triples`."""
    return jax.ShapeDtypeStruct(tuple(shape), U64)


def eval_circuit(circuit: Callable, key: jax.Array, *xs: SharedBits) -> Any:
    """Evaluate ``circuit`` on shared words; outputs (arrays of words) become :class:`SharedBits`.

    Cost: one round per ``and_fn`` call of the circuit (its AND depth when the
    circuit batches each layer), 2 words opened per AND word.
    """
    _check_key(key)
    n = xs[0].n_parties
    triples = circuit_triples(key, n, circuit, *(words_like(x.shape) for x in xs))
    out = spmd.party_map(lambda t, *s: run_local(circuit, t, *s))(triples, *(x.shares for x in xs))
    return jax.tree.map(SharedBits, out)


def and_bb(x: SharedBits, y: SharedBits, key: jax.Array) -> SharedBits:
    """``x & y`` of two secrets (broadcasting): 1 round, 2 words opened per word per party."""
    return eval_circuit(lambda a, b, and_fn, xor_fn: and_fn(a, b), key, x, y)


# ------------------------------------------------------------ circuits


def kogge_stone_carries(g: jax.Array, p: jax.Array, and_fn: AndFn, xor_fn: XorFn) -> jax.Array:
    """Prefix generate ``G_i`` (carry out of bit ``i``) from bitwise ``g``, ``p`` [Kogge-Stone73].

    Level ``s = 1, 2, ..., 32``: ``G ^= P & (G << s)``, ``P &= P << s``
    (``^`` is ``|`` since the two are disjoint). Needs ``p & g == 0``.
    6 AND layers: 2 words per layer, 1 word in the last.
    """
    G, P = g, p
    for s in (1, 2, 4, 8, 16):
        q = and_fn(jnp.stack([P, P]), jnp.stack([G << U64(s), P << U64(s)]))
        G, P = xor_fn(G, q[0]), q[1]
    return xor_fn(G, and_fn(P, G << U64(32)))


def add_circuit(x: jax.Array, y: jax.Array, and_fn: AndFn, xor_fn: XorFn) -> jax.Array:
    """``x + y mod 2**64`` on packed bits: 7 AND layers (``g = x & y``, then Kogge-Stone)."""
    p = xor_fn(x, y)
    return xor_fn(p, kogge_stone_carries(and_fn(x, y), p, and_fn, xor_fn) << U64(1))


def csa_circuit(a: jax.Array, b: jax.Array, c: jax.Array, and_fn: AndFn, xor_fn: XorFn):
    """Carry-save 3 -> 2: ``(s, k)`` with ``s + k = a + b + c mod 2**64``; 1 AND layer.

    ``s = a ^ b ^ c``, ``k = maj(a, b, c) << 1``, ``maj = c ^ ((a ^ c) & (b ^ c))``.
    """
    maj = xor_fn(c, and_fn(xor_fn(a, c), xor_fn(b, c)))
    return xor_fn(xor_fn(a, b), c), maj << U64(1)

"""The pseudorandom generator behind every share and every dealer correlation: AES-128 in counter mode.

``AES`` is a JAX PRNG implementation (use it as ``jax.random.key(seed,
impl=prg.AES)``), so ``jax.random.split``, ``fold_in``, ``bits`` and the
samplers built on them work unchanged:

* a key is 128 bits (``uint32[4]``), used as an AES-128 key;
* ``random_bits(key, shape)`` is the first bytes of the key stream
  ``AES_k(0) || AES_k(1) || ...``, block ``j`` being the 128-bit little-endian
  integer ``j`` [FIPS-197, SP 800-38A], read as little-endian words;
* ``seed``, ``split`` and ``fold_in`` derive keys as JAX's ``rbg``
  implementation does (Threefry-2x32 over the key words).

Two paths give the same bits (tested against each other and against the
FIPS-197 example): on CPU a native AES-NI / VAES kernel
(``csrc/aes_ctr.cc``, an XLA FFI custom call built on first use by
:mod:`jaxmpc.native`), about 0.5 ns per 64-bit word on the 2-core reference
machine against about 3 ns for XLA's RngBitGenerator; on other backends, or
where the kernel cannot be built, :func:`reference_bits` in ``jax.numpy``.
The kernel is opaque to XLA, so its words are computed once and never
re-derived inside the fusions that consume them.

Security: AES-128 in counter mode is the standard PRG of MPC implementations;
the key derivation (Threefry-2x32, a 20-round counter-based PRF) is not a
vetted construction. See SECURITY.md.

[FIPS-197] NIST, Advanced Encryption Standard (AES), 2001.
[SP 800-38A] NIST, Recommendation for Block Cipher Modes of Operation, 2001.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import random as jex_random

from jaxmpc import native

_TARGET = "jaxmpc_aes128_ctr"


# ----------------------------------------------------------- AES reference


def _make_sbox() -> np.ndarray:
    """AES S-box: inverse in GF(2^8) mod x^8+x^4+x^3+x+1, then the affine map (FIPS-197 5.1.1)."""

    def rotl8(x: int, s: int) -> int:
        return ((x << s) | (x >> (8 - s))) & 0xFF

    box = np.zeros(256, np.uint8)
    p = q = 1
    while True:  # p runs over the powers of 3, q over the matching powers of 3**-1, so q = p**-1
        p = (p ^ (p << 1) ^ (0x1B if p & 0x80 else 0)) & 0xFF
        q ^= q << 1
        q ^= q << 2
        q ^= q << 4
        q &= 0xFF
        if q & 0x80:
            q ^= 0x09
        box[p] = q ^ rotl8(q, 1) ^ rotl8(q, 2) ^ rotl8(q, 3) ^ rotl8(q, 4) ^ 0x63
        if p == 1:
            break
    box[0] = 0x63
    return box


_SBOX = _make_sbox()
_RCON = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1B, 0x36)
# byte i = 4 * column + row; ShiftRows moves row r left by r columns
_SHIFT_ROWS = np.array([4 * ((c + r) % 4) + r for c in range(4) for r in range(4)])


def _xtime(x: jax.Array) -> jax.Array:
    """Multiplication by x (= 2) in GF(2^8), bytewise."""
    return (x << 1) ^ ((x >> 7) * jnp.uint8(0x1B))


def _round_keys(key_bytes: jax.Array) -> jax.Array:
    """AES-128 key expansion (FIPS-197 5.2): ``uint8[16] -> uint8[11, 16]``."""
    sbox = jnp.asarray(_SBOX)
    words = [key_bytes[4 * i : 4 * i + 4] for i in range(4)]
    for i in range(4, 44):
        t = words[i - 1]
        if i % 4 == 0:
            t = sbox[jnp.roll(t, -1)] ^ jnp.array([_RCON[i // 4 - 1], 0, 0, 0], jnp.uint8)
        words.append(words[i - 4] ^ t)
    return jnp.stack([jnp.concatenate(words[4 * r : 4 * r + 4]) for r in range(11)])


def encrypt_blocks(key_bytes: jax.Array, blocks: jax.Array) -> jax.Array:
    """AES-128 of ``uint8[..., 16]`` blocks under ``uint8[16]`` key bytes, in ``jax.numpy`` (FIPS-197 5.1)."""
    sbox = jnp.asarray(_SBOX)
    rk = _round_keys(key_bytes)
    s = blocks ^ rk[0]
    for r in range(1, 11):
        s = sbox[s][..., _SHIFT_ROWS]
        if r < 10:
            a = s.reshape(s.shape[:-1] + (4, 4))  # (..., column, row)
            a1, a2, a3 = (jnp.roll(a, -k, axis=-1) for k in (1, 2, 3))
            s = (_xtime(a) ^ _xtime(a1) ^ a1 ^ a2 ^ a3).reshape(s.shape)
        s = s ^ rk[r]
    return s


def _words_to_bytes(x: jax.Array) -> jax.Array:
    """Little-endian bytes of unsigned words, flattened."""
    return jax.lax.bitcast_convert_type(x, jnp.uint8).reshape(-1)


def _bytes_to(stream: jax.Array, dtype, shape: tuple[int, ...]) -> jax.Array:
    width = jnp.dtype(dtype).itemsize
    if width == 1:
        return stream.reshape(shape)
    return jax.lax.bitcast_convert_type(stream.reshape(shape + (width,)), dtype)


def reference_bits(key: jax.Array, dtype, shape: tuple[int, ...]) -> jax.Array:
    """The key stream of one ``uint32[4]`` key as unsigned words of ``dtype``, in ``jax.numpy``."""
    shape = tuple(shape)
    n_bytes = math.prod(shape) * jnp.dtype(dtype).itemsize
    n_blocks = -(-n_bytes // 16)
    counters = jnp.stack([jnp.arange(n_blocks, dtype=jnp.uint64), jnp.zeros(n_blocks, jnp.uint64)], axis=-1)
    blocks = jax.lax.bitcast_convert_type(counters, jnp.uint8).reshape(n_blocks, 16)
    stream = encrypt_blocks(_words_to_bytes(key), blocks).reshape(-1)[:n_bytes]
    return _bytes_to(stream, dtype, shape)


# ----------------------------------------------------------- native kernel


@functools.cache
def native_available() -> bool:
    """Whether the AES-NI kernel is built, loaded and registered (warns once with the reason if not)."""
    try:
        lib = native.load("aes_ctr")
        if not lib.jaxmpc_aes_supported():
            raise native.NativeUnavailable("this CPU has no AES-NI")
    except native.NativeUnavailable as e:
        warnings.warn(f"jaxmpc.prg: using the jax.numpy AES (slow on CPU); the native kernel is unavailable: {e}")
        return False
    jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(lib.jaxmpc_aes128_ctr), platform="cpu")
    return True


def native_bits(key: jax.Array, dtype, shape: tuple[int, ...]) -> jax.Array:
    """:func:`reference_bits` by the native kernel (CPU only; keys ``uint32[..., 4]`` batch)."""
    if not native_available():
        raise native.NativeUnavailable("the native AES kernel is unavailable (see the warning above)")
    out = jax.ShapeDtypeStruct(key.shape[:-1] + tuple(shape), dtype)
    return jax.ffi.ffi_call(_TARGET, out, vmap_method="broadcast_all")(key)


# ----------------------------------------------------------- the JAX PRNG


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    dtype = jnp.dtype(f"uint{bit_width}")
    shape = tuple(shape)
    if not native_available():
        return reference_bits(key, dtype, shape)
    if jax.default_backend() == "cpu":
        # no accelerator to place the computation on: skip lowering the
        # reference (about 25 ms of compile time per draw)
        return native_bits(key, dtype, shape)
    return jax.lax.platform_dependent(
        key,
        cpu=lambda k: native_bits(k, dtype, shape),
        default=lambda k: reference_bits(k, dtype, shape),
    )


_rbg = jex_random.rbg_prng_impl

#: AES-128-CTR words with rbg-style key derivation: ``jax.random.key(seed, impl=AES)``.
AES = jex_random.define_prng_impl(
    key_shape=(4,),
    seed=_rbg.seed,
    split=_rbg.split,
    fold_in=_rbg.fold_in,
    random_bits=_random_bits,
    name="aes128ctr",
    tag="aes",
)

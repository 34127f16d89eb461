"""The AES-128-CTR generator: the jax.numpy reference against FIPS-197, the
native kernel against the reference, and the JAX PRNG implementation."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxmpc import prg

needs_native = pytest.mark.skipif(not prg.native_available(), reason="native AES kernel not built on this machine")

DTYPES = [jnp.uint8, jnp.uint16, jnp.uint32, jnp.uint64]
FIPS_KEY = np.arange(16, dtype=np.uint8)


def _hex(x) -> str:
    return np.asarray(x).tobytes().hex()


def _key_words(key_bytes: np.ndarray) -> jax.Array:
    return jnp.asarray(np.frombuffer(key_bytes.tobytes(), np.uint32))


def test_sbox_is_the_aes_sbox():
    assert prg._SBOX[0x00] == 0x63 and prg._SBOX[0x53] == 0xED and prg._SBOX[0xFF] == 0x16
    assert sorted(prg._SBOX.tolist()) == list(range(256))  # a permutation


def test_reference_matches_fips197_example():
    # FIPS-197 Appendix C.1: AES-128
    pt = np.frombuffer(bytes.fromhex("00112233445566778899aabbccddeeff"), np.uint8)
    ct = prg.encrypt_blocks(jnp.asarray(FIPS_KEY), jnp.asarray(pt))
    assert _hex(ct) == "69c4e0d86a7b0430d8cdb78070b4c55a"


def test_reference_key_expansion_matches_fips197():
    # FIPS-197 Appendix A.1 (key 2b7e1516...): last round key
    key = np.frombuffer(bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"), np.uint8)
    rk = prg._round_keys(jnp.asarray(key))
    assert _hex(rk[10]) == "d014f9a8c9ee2589e13f0cc8b6630ca6"


def test_stream_is_aes_of_little_endian_counters():
    key = _key_words(FIPS_KEY)
    stream = prg.reference_bits(key, jnp.uint8, (16 * 3,)).reshape(3, 16)
    for j in range(3):
        block = np.zeros(16, np.uint8)
        block[0] = j
        assert _hex(stream[j]) == _hex(prg.encrypt_blocks(jnp.asarray(FIPS_KEY), jnp.asarray(block)))


@needs_native
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1,), (3,), (7, 5), (2, 3, 33), (1000,)])
def test_native_equals_reference(dtype, shape):
    key = jnp.asarray(np.array([0x01234567, 0x89ABCDEF, 0xDEADBEEF, 7], np.uint32))
    got = jax.jit(lambda k: prg.native_bits(k, dtype, shape))(key)
    want = prg.reference_bits(key, dtype, shape)
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@needs_native
@given(
    words=st.lists(st.integers(0, 2**32 - 1), min_size=4, max_size=4),
    n=st.integers(0, 700),  # crosses the kernel's 32-block VAES chunks and its tail
)
def test_native_equals_reference_property(words, n):
    key = jnp.asarray(np.array(words, np.uint32))
    np.testing.assert_array_equal(
        np.asarray(prg.native_bits(key, jnp.uint64, (n,))), np.asarray(prg.reference_bits(key, jnp.uint64, (n,)))
    )


@needs_native
def test_native_batches_over_keys_under_vmap():
    keys = jax.random.key_data(jax.random.split(jax.random.key(3, impl=prg.AES), 6)).reshape(2, 3, 4)
    got = jax.jit(jax.vmap(jax.vmap(lambda k: prg.native_bits(k, jnp.uint32, (5, 3)))))(keys)
    assert got.shape == (2, 3, 5, 3)
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(got[i, j], prg.reference_bits(keys[i, j], jnp.uint32, (5, 3)))


def test_prng_impl_drives_jax_random():
    key = jax.random.key(0, impl=prg.AES)
    assert jax.random.key_impl(key) is not None and jax.random.key_data(key).shape == (4,)
    words = jax.random.bits(key, (6,), jnp.uint64)
    np.testing.assert_array_equal(words, prg.reference_bits(jax.random.key_data(key), jnp.uint64, (6,)))
    # split / fold_in give distinct keys, and vmapped draws equal per-key draws
    keys = jax.random.split(key, 4)
    assert len({_hex(jax.random.key_data(k)) for k in keys}) == 4
    batched = jax.jit(jax.vmap(lambda k: jax.random.bits(k, (3,), jnp.uint64)))(keys)
    for i, k in enumerate(keys):
        np.testing.assert_array_equal(batched[i], jax.random.bits(k, (3,), jnp.uint64))
    assert _hex(jax.random.key_data(jax.random.fold_in(key, 1))) != _hex(jax.random.key_data(key))
    u = jax.random.uniform(key, (1000,))
    assert u.dtype == jnp.float64 and 0.0 <= float(u.min()) and float(u.max()) < 1.0
    assert 0.45 < float(u.mean()) < 0.55


def test_words_look_uniform():
    # a coarse check that no bit position is stuck (AES's quality is not ours to test)
    w = np.asarray(jax.random.bits(jax.random.key(5, impl=prg.AES), (4096,), jnp.uint64))
    ones = np.unpackbits(w.view(np.uint8)).reshape(-1, 64).mean(axis=0)
    assert np.all(np.abs(ones - 0.5) < 0.05)


def test_without_native_the_reference_gives_the_same_words():
    """``JAXMPC_NATIVE=0``: a warning, and the same bits from the jax.numpy path."""
    code = textwrap.dedent(
        """
        import warnings, jax, jax.numpy as jnp, numpy as np
        jax.config.update("jax_enable_x64", True)
        from jaxmpc import prg
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            bits = jax.random.bits(jax.random.key(11, impl=prg.AES), (40,), jnp.uint64)
        assert any("JAXMPC_NATIVE=0" in str(x.message) for x in w), [str(x.message) for x in w]
        print(np.asarray(bits).tobytes().hex())
        """
    )
    env = dict(os.environ, JAXMPC_NATIVE="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    here = jax.random.bits(jax.random.key(11, impl=prg.AES), (40,), jnp.uint64)
    assert out.stdout.strip() == _hex(here)

"""Test configuration: 64-bit types on and strict dtype promotion, so that a
silent upcast anywhere in the library fails the suite."""

import os

# Tests compile many small programs; XLA's backend optimisations buy nothing
# for exact integer arithmetic at test sizes and double the compile time.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

import hypothesis  # noqa: E402

hypothesis.settings.register_profile(
    "ci", max_examples=int(os.environ.get("JAXMPC_HYPOTHESIS_EXAMPLES", "25")), deadline=None
)
hypothesis.settings.load_profile("ci")

# Compiled programs are cached across test runs on the same machine (a cold
# cache only costs time, never correctness).
_cache = os.environ.get("JAXMPC_TEST_XLA_CACHE", os.path.expanduser("~/.cache/jaxmpc-tests/xla"))
if _cache:
    jax.config.update("jax_compilation_cache_dir", _cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

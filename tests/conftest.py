"""Test configuration: 64-bit types on and strict dtype promotion, so that a
silent upcast anywhere in the library fails the suite."""

import os

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

import hypothesis  # noqa: E402

hypothesis.settings.register_profile(
    "ci", max_examples=int(os.environ.get("JAXMPC_HYPOTHESIS_EXAMPLES", "25")), deadline=None
)
hypothesis.settings.load_profile("ci")

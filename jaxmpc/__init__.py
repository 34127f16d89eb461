"""jaxmpc: secure multi-party computation by additive secret sharing, in JAX."""

import os as _os

import jax as _jax

if not _os.environ.get("JAXMPC_NO_X64"):
    _jax.config.update("jax_enable_x64", True)

"""SPMD execution over the named ``party`` axis, and the only ways to communicate.

Protocols are written once, from one party's point of view: its local share
in, its local share out. :func:`party_map` runs such a function for every
party:

* simulated, in one process: ``jax.vmap(fn, axis_name="party")`` over the
  stacked shares (the default);
* distributed: ``jax.shard_map`` over a mesh axis named ``party``, one device
  per party, when such a mesh is active (``with jax.set_mesh(mesh):``, see
  :mod:`jaxmpc.distributed`). Each process then holds only its own share and
  the collectives below are real network traffic.

Communication happens only through :func:`open_sum` (arithmetic shares:
``psum``), :func:`open_xor` (packed binary shares: all_gather + XOR) and
:func:`send_to` (shares to one owner). Each records its rounds and bytes at
trace time in :mod:`jaxmpc.cost`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec

from jaxmpc import cost

PARTY = "party"


def _party_mesh():
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is not None and not mesh.empty and PARTY in mesh.axis_names:
        return mesh
    return None


def party_map(fn: Callable[..., Any], in_axes: Any = 0) -> Callable[..., Any]:
    """Run the per-party function ``fn`` for every party.

    ``in_axes`` follows ``jax.vmap``: ``0`` for arguments stacked on a leading
    party axis, ``None`` for public values every party sees. Outputs are
    always stacked on a leading party axis.
    """
    mesh = _party_mesh()
    if mesh is None:
        return jax.vmap(fn, in_axes=in_axes, out_axes=0, axis_name=PARTY)

    def run(*args):
        axes = tuple(in_axes) if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        if len(axes) != len(args):
            raise ValueError(f"in_axes has {len(axes)} entries for {len(args)} arguments")
        specs = tuple(PartitionSpec(PARTY) if ax == 0 else PartitionSpec() for ax in axes)

        def body(*blocks):  # this device's party block has a leading axis of size 1
            local = [
                jax.tree.map(lambda a: a[0], b) if ax == 0 else b for b, ax in zip(blocks, axes)
            ]
            return jax.tree.map(lambda o: o[None], fn(*local))

        return jax.shard_map(
            body, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(PARTY), check_vma=False
        )(*args)

    return run


def party_index() -> jax.Array:
    """This party's id, 0..n-1 (inside :func:`party_map`)."""
    return lax.axis_index(PARTY)


def n_parties() -> int:
    """Number of parties (inside :func:`party_map`), a static int."""
    return int(lax.axis_size(PARTY))


def is_party(i: int) -> jax.Array:
    """Boolean scalar: am I party ``i``?"""
    return party_index() == i


def _shapes(tree) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(x.shape) for x in jax.tree.leaves(tree))


def open_sum(values: Any, *, what: str, masked: bool = True) -> Any:
    """Open arithmetic shares to every party: ``sum_i x_i mod 2**64``.

    One round; each party sends ``(n-1) * 8`` bytes per element. ``values`` may
    be a pytree of uint64 arrays, all opened in the same round.
    """
    n = n_parties()
    cost.record(cost.Opening(what, "arith", _shapes(values), masked, n))
    return jax.tree.map(lambda x: lax.psum(x, PARTY), values)


def open_xor(values: Any, *, what: str, masked: bool = True) -> Any:
    """Open XOR shares (packed bits in uint64 words) to every party.

    One round; each party sends ``(n-1) * 8`` bytes per word.
    """
    n = n_parties()
    cost.record(cost.Opening(what, "xor", _shapes(values), masked, n))

    def xor_all(x):
        gathered = lax.all_gather(x, PARTY)  # (n, ...)
        out = gathered[0]
        for i in range(1, n):
            out = out ^ gathered[i]
        return out

    return jax.tree.map(xor_all, values)


def send_to(values: Any, owner: int, *, what: str, masked: bool = False) -> Any:
    """Every party sends its arithmetic share to ``owner``, who learns the sum.

    One round; each non-owner sends 8 bytes per element. The returned value is
    meaningful only at ``owner``; other parties get zeros.
    """
    n = n_parties()
    cost.record(cost.Opening(what, "send", _shapes(values), masked, n, owner=owner))
    mine = is_party(owner)
    return jax.tree.map(
        lambda x: jnp.where(mine, lax.psum(x, PARTY), jnp.zeros_like(x)), values
    )

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
    """The active mesh if it has an axis named ``party`` (``with jax.set_mesh(mesh):``)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is not None and not mesh.empty and PARTY in mesh.axis_names:
        return mesh
    return None


def in_party_shard_map() -> bool:
    """True while tracing the body of :func:`party_map`'s ``shard_map`` branch
    (the ``party`` mesh axis is manual there: one device per party)."""
    mesh = jax.sharding.get_abstract_mesh()
    return mesh is not None and not mesh.empty and PARTY in mesh.manual_axes


def public_operand(x: Any) -> tuple[Any, int | None]:
    """A public value stacked on the party axis (the same at every party, e.g.
    an opened ``x - a``) as a :func:`party_map` argument: ``(value, in_axis)``.

    In the one-process simulation it is one unmapped copy, so products with it
    fold the party axis into one larger GEMM (``[a_0; a_1] @ f``); over a party
    mesh it stays stacked, since each party already holds its own copy and
    taking party 0's would broadcast it.
    """
    if _party_mesh() is None:
        return jax.tree.map(lambda v: v[0], x), None  # (a pytree of such arrays too)
    return x, 0


def party_map(fn: Callable[..., Any], in_axes: Any = 0) -> Callable[..., Any]:
    """Run the per-party function ``fn`` for every party.

    ``in_axes`` follows ``jax.vmap``: ``0`` for arguments stacked on a leading
    party axis, ``None`` for public values every party sees; a tuple gives one
    entry (a pytree prefix) per positional argument. Keyword arguments are
    mapped over axis 0, as in ``jax.vmap``. Outputs are always stacked on a
    leading party axis.

    With an active mesh that has a ``party`` axis, this is a ``jax.shard_map``
    over that axis: the mesh must have one device per party (the stacked axis
    of every mapped argument must have the size of the ``party`` mesh axis).
    """
    mesh = _party_mesh()
    if mesh is None:
        return jax.vmap(fn, in_axes=in_axes, out_axes=0, axis_name=PARTY)
    return _shard_map_party(fn, in_axes, mesh)


def _shard_map_party(fn: Callable[..., Any], in_axes: Any, mesh) -> Callable[..., Any]:
    """``party_map`` over the mesh axis ``party``: each device runs ``fn`` on its block."""
    if PARTY in mesh.manual_axes:
        raise ValueError("party_map cannot be nested inside another party_map")
    n = int(mesh.shape[PARTY])
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)

    def run(*args, **kwargs):
        names = tuple(kwargs)
        all_args = args + tuple(kwargs[k] for k in names)
        if isinstance(in_axes, tuple):
            if len(in_axes) != len(args):
                raise ValueError(
                    f"party_map: in_axes has {len(in_axes)} entries for {len(args)} positional arguments"
                )
            axes = in_axes + (0,) * len(names)
        else:
            axes = (in_axes,) * len(all_args)

        def leaf_axis(ax, leaf):
            if ax is None:
                return None
            if isinstance(ax, bool) or not isinstance(ax, int):
                raise TypeError(f"party_map: in_axes entries must be int or None, got {ax!r}")
            ndim = jnp.ndim(leaf)
            if not -ndim <= ax < ndim:
                raise ValueError(f"party_map: in_axes {ax} is out of range for an argument of rank {ndim}")
            ax %= ndim
            if jnp.shape(leaf)[ax] != n:
                raise ValueError(
                    f"party_map: an argument has {jnp.shape(leaf)[ax]} shares on its party axis "
                    f"but the mesh axis {PARTY!r} has {n} devices; use one device per party"
                )
            return ax

        # per-leaf party axes (in_axes entries are pytree prefixes of the arguments)
        leaf_axes = tuple(
            jax.tree.map(
                lambda ax, sub: jax.tree.map(lambda leaf: leaf_axis(ax, leaf), sub),
                a, arg, is_leaf=lambda x: x is None,
            )
            for a, arg in zip(axes, all_args)
        )
        flat_args, treedef = jax.tree.flatten(all_args)
        flat_axes = treedef.flatten_up_to(leaf_axes)
        specs = tuple(
            PartitionSpec() if ax is None else PartitionSpec(*([None] * ax), PARTY) for ax in flat_axes
        )

        def body(*blocks):  # this device's block has size 1 on each party axis
            local = [b if ax is None else lax.index_in_dim(b, 0, ax, keepdims=False) for b, ax in zip(blocks, flat_axes)]
            call = jax.tree.unflatten(treedef, local)
            out = fn(*call[: len(args)], **dict(zip(names, call[len(args):])))
            return jax.tree.map(lambda o: jnp.asarray(o)[None], out)

        return jax.shard_map(
            body, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(PARTY), check_vma=False
        )(*flat_args)

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
    cost.record(op := cost.Opening(what, "arith", _shapes(values), masked, n))
    return cost.tap(op, values, jax.tree.map(lambda x: lax.psum(x, PARTY), values))


def open_xor(values: Any, *, what: str, masked: bool = True) -> Any:
    """Open XOR shares (packed bits in uint64 words) to every party.

    One round; each party sends ``(n-1) * 8`` bytes per word.
    """
    n = n_parties()
    cost.record(op := cost.Opening(what, "xor", _shapes(values), masked, n))

    def xor_all(x):
        gathered = lax.all_gather(x, PARTY)  # (n, ...)
        out = gathered[0]
        for i in range(1, n):
            out = out ^ gathered[i]
        return out

    return cost.tap(op, values, jax.tree.map(xor_all, values))


def send_to(values: Any, owner: int, *, what: str, masked: bool = False) -> Any:
    """Every party sends its arithmetic share to ``owner``, who learns the sum.

    One round; each non-owner sends 8 bytes per element. The returned value is
    meaningful only at ``owner``; other parties get zeros.
    """
    n = n_parties()
    cost.record(op := cost.Opening(what, "send", _shapes(values), masked, n, owner=owner))
    mine = is_party(owner)
    if in_party_shard_map():
        # Over real devices a psum would deliver the sum to every party; send
        # each share to the owner alone (n-1 point-to-point messages).
        out = jax.tree.map(lambda x: jnp.where(mine, _gather_at(x, owner, n), jnp.zeros_like(x)), values)
    else:
        out = jax.tree.map(lambda x: jnp.where(mine, lax.psum(x, PARTY), jnp.zeros_like(x)), values)
    return cost.tap(op, values, out)


def _gather_at(x: jax.Array, owner: int, n: int) -> jax.Array:
    """Sum of the parties' blocks of ``x``, correct at ``owner`` only, by
    point-to-point messages to ``owner`` (``lax.ppermute`` with one pair each):
    the other parties receive nothing."""
    if not 0 <= owner < n:
        raise ValueError(f"owner={owner} is not a party (0..{n - 1})")
    total = x
    for i in range(n):
        if i != owner:
            total = total + lax.ppermute(x, PARTY, [(i, owner)])
    return total

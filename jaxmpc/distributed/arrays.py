"""Shared values as global arrays: each party holds only its own ``(1, ...)`` block.

* what a process holds: :func:`local_block`, :func:`describe_local`,
  :func:`placeholder` (for values that are not its own);
* point to point: a sender (a party or the dealer) sends row ``j`` of its
  ``(n, ...)`` array to party ``j`` only (:func:`_send_rows`);
* an owner shares its input: :func:`share` (one value) / :func:`share_tree`
  (a pytree, e.g. the model);
* outputs: :func:`reveal` to every party, or with ``to=`` to one party only.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmpc import ring, spmd
from jaxmpc.distributed.failure import _waiting
from jaxmpc.distributed.runtime import DEALER, NODE, PARTY, DistributedError, Runtime, runtime
from jaxmpc.tensor import SharedTensor

def _is_shared(x: Any) -> bool:
    if isinstance(x, SharedTensor):
        return True
    binary = sys.modules.get("jaxmpc.protocols.binary")
    return binary is not None and isinstance(x, binary.SharedBits)


def _is_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def placeholder(tree: Any) -> Any:
    """The same pytree with every array replaced by its ``ShapeDtypeStruct``:
    what a process holds for values that are not its own."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), a.dtype), tree)


def local_block(x: Any) -> np.ndarray:
    """This process's block of a party-sharded array (or of ``x.shares``): ``(1, ...)``.

    Raises if this process holds more or less than exactly one block.
    """
    arr = x.shares if _is_shared(x) else x
    shards = arr.addressable_shards
    if len(shards) != 1:
        raise DistributedError(f"expected one local block, this process holds {len(shards)}")
    return np.asarray(shards[0].data)


def describe_local(x: Any) -> dict[str, Any]:
    """What this process holds of a global array: for tests and audits."""
    arr = x.shares if _is_shared(x) else x
    shards = arr.addressable_shards
    return {
        "global_shape": list(arr.shape),
        "blocks": [
            {
                "shape": list(s.data.shape),
                "index": [[sl.start, sl.stop] if isinstance(sl, slice) else sl for sl in s.index],
                "device_process": s.device.process_index,
            }
            for s in shards
        ],
    }


@functools.lru_cache(maxsize=None)
def _scatter_program(mesh: Mesh, axis: str, src: int, n_targets: int, shape: tuple[int, ...]):
    """Device ``src`` sends row ``j`` of its ``(n_targets, *shape)`` block to device ``j``."""

    def body(block):
        rows = block[0]
        me = lax.axis_index(axis)
        out = jnp.zeros(shape, rows.dtype)
        for j in range(n_targets):
            if j == src:
                out = jnp.where(me == src, rows[j], out)
            else:
                out = out + lax.ppermute(rows[j], axis, [(src, j)])
        return out[None]

    spec = PartitionSpec(axis)
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False))


_ZEROS: dict[tuple, jax.Array] = {}


def _local_device(mesh: Mesh):
    mine = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    if len(mine) != 1:
        raise DistributedError(f"this process has {len(mine)} devices in the mesh, expected 1")
    return mine[0]


def _global_from_local(mesh: Mesh, axis: str, block: jax.Array | np.ndarray) -> jax.Array:
    """The global array whose only local block (on this process's device) is ``block``."""
    size = int(mesh.shape[axis])
    shape = (size,) + tuple(block.shape[1:])
    device = _local_device(mesh)
    block = jax.device_put(block, device)
    return jax.make_array_from_single_device_arrays(shape, NamedSharding(mesh, PartitionSpec(axis)), [block])


def _send_rows(rt: Runtime, src: int | str, stacked: jax.Array | None, shape: tuple[int, ...]) -> jax.Array | None:
    """``src`` (a party or the dealer) holds ``stacked`` of shape ``(n, *shape)``
    and sends row ``j`` to party ``j`` only. Returns the party-sharded
    ``(n, *shape)`` uint64 array (``None`` at the dealer)."""
    n = rt.n_parties
    shape = tuple(int(d) for d in shape)
    holds_src = rt.is_dealer if src == DEALER else rt.holds(src)
    if holds_src:
        if stacked is None or tuple(stacked.shape) != (n,) + shape:
            raise DistributedError(
                f"the sender must hold the {n} shares, shape {(n,) + shape}, got "
                f"{None if stacked is None else tuple(stacked.shape)}"
            )
        if stacked.dtype != ring.RING_DTYPE:
            raise DistributedError(f"shares must be {ring.RING_DTYPE}, got {stacked.dtype}")
    if not rt.multiprocess:
        return jax.device_put(stacked, rt.party_sharding)
    if src != DEALER and rt.role == DEALER:
        return None  # between parties only
    mesh = rt.node_mesh if src == DEALER else rt.party_mesh
    axis = NODE if src == DEALER else PARTY
    src_index = n if src == DEALER else src
    if holds_src:
        block = jnp.asarray(stacked)[None]
    else:
        zkey = (mesh, (1, n) + shape)
        if zkey not in _ZEROS:
            _ZEROS[zkey] = jax.device_put(np.zeros((1, n) + shape, np.uint64), _local_device(mesh))
        block = _ZEROS[zkey]
    program = _scatter_program(mesh, axis, src_index, n, shape)
    first = (mesh, src_index, shape) not in _SEEN_SCATTERS
    _SEEN_SCATTERS.add((mesh, src_index, shape))
    with _waiting(rt, f"sending shares from {'the dealer' if src == DEALER else f'party {src}'}", first):
        out = program(_global_from_local(mesh, axis, block))
        out.block_until_ready()
    if rt.role == DEALER:
        return None
    if src == DEALER:  # re-home this party's block on the party mesh (no copy)
        (shard,) = out.addressable_shards
        return jax.make_array_from_single_device_arrays((n,) + shape, rt.party_sharding, [shard.data])
    return out


_SEEN_SCATTERS: set = set()


@functools.lru_cache(maxsize=None)
def _concat_program(n: int):
    return jax.jit(lambda *a: _concat_rows(a, n))


@functools.lru_cache(maxsize=None)
def _split_program(shapes: tuple[tuple[int, ...], ...], n: int, sharding: NamedSharding):
    return jax.jit(lambda f: _split_rows(f, shapes, n), out_shardings=sharding)


def _concat_rows(arrays: Sequence[jax.Array], n: int) -> jax.Array:
    if not arrays:
        return jnp.zeros((n, 0), ring.RING_DTYPE)
    return jnp.concatenate([jnp.reshape(a, (n, -1)) for a in arrays], axis=1)


def _split_rows(flat: jax.Array, shapes: Sequence[tuple[int, ...]], n: int) -> list[jax.Array]:
    out, offset = [], 0
    for s in shapes:
        size = int(np.prod(s, dtype=np.int64))
        out.append(jnp.reshape(lax.slice_in_dim(flat, offset, offset + size, axis=1), (n,) + s))
        offset += size
    return out


def share_tree(rt: Runtime | None, owner: int, tree: Any, template: Any) -> Any:
    """Party ``owner`` distributes an already-split pytree of shared values.

    ``tree`` (at the owner; ignored elsewhere) holds :class:`SharedTensor`
    leaves with all ``n`` shares, e.g. from :func:`jaxmpc.nn.share_params`;
    ``template`` has the same structure with ``ShapeDtypeStruct`` shares
    (``jax.eval_shape`` of the sharing), known to everyone. The owner keeps
    share ``owner`` and sends share ``j`` to party ``j`` only, in one batch.
    Returns the tree with party-sharded shares (the template at the dealer).
    """
    rt = rt or runtime()
    if not 0 <= owner < rt.n_parties:
        raise DistributedError(f"owner={owner} is not a party (0..{rt.n_parties - 1})")
    n = rt.n_parties
    t_leaves, treedef = jax.tree.flatten(template, is_leaf=_is_shared)
    if not all(_is_shared(t) for t in t_leaves):
        raise DistributedError("share_tree: every leaf of the template must be a shared tensor")
    shapes = tuple(tuple(int(d) for d in t.shares.shape[1:]) for t in t_leaves)
    stacked = None
    if rt.holds(owner):
        leaves = treedef.flatten_up_to(tree)
        for leaf, t in zip(leaves, t_leaves):
            if tuple(leaf.shares.shape) != tuple(t.shares.shape):
                raise DistributedError(f"share_tree: a leaf has shape {leaf.shares.shape}, template {t.shares.shape}")
        stacked = _concat_program(n)(*(leaf.shares for leaf in leaves))
    total = sum(int(np.prod(s, dtype=np.int64)) for s in shapes)
    flat = _send_rows(rt, owner, stacked, (total,))
    if flat is None:
        return template
    with jax.set_mesh(rt.party_mesh):
        parts = _split_program(shapes, n, rt.party_sharding)(flat)
    return jax.tree.unflatten(treedef, [dataclasses.replace(t, shares=p) for t, p in zip(t_leaves, parts)])


def share(
    rt: Runtime | None,
    owner: int,
    value: Any,
    key: jax.Array | None,
    shape: Sequence[int],
    frac_bits: int = ring.DEFAULT_FRAC_BITS,
) -> SharedTensor:
    """Party ``owner`` secret-shares its plaintext ``value`` (of ``shape``) with its ``key``.

    Exactly :func:`jaxmpc.tensor.share` at the owner (same shares as the
    simulation for the same key); then share ``j`` goes to party ``j`` only.
    Other processes pass ``value=None, key=None``.
    """
    rt = rt or runtime()
    from jaxmpc import tensor

    n = rt.n_parties
    template = SharedTensor(jax.ShapeDtypeStruct((n,) + tuple(shape), ring.RING_DTYPE), ring.check_frac_bits(frac_bits))
    shared = tensor.share(value, key, n, frac_bits) if rt.holds(owner) else None
    return share_tree(rt, owner, shared, template)


@functools.lru_cache(maxsize=None)
def _open_program(rt: Runtime, shapes: tuple[tuple[int, ...], ...], to: int | None, what: str):
    n = rt.n_parties

    def run(*shares):
        flat = _concat_rows(shares, n)
        if to is None:
            opened = spmd.party_map(lambda s: spmd.open_sum(s, what=what, masked=False))(flat)
        else:
            opened = spmd.party_map(lambda s: spmd.send_to(s, to, what=what))(flat)
        return opened  # (n, total): each party keeps its own row

    return jax.jit(run, out_shardings=rt.party_sharding)


def reveal(rt: Runtime | None, tree: Any, *, to: int | None = None, what: str = "reveal") -> Any:
    """Open a pytree of shared values: to every party (``to=None``) or to party ``to`` only.

    Returns the decoded float64 values (numpy) at the recipients, ``None``
    elsewhere (the dealer, and with ``to`` the other parties). With ``to``,
    every other party sends its shares to ``to`` by point-to-point messages and
    receives nothing. One round.
    """
    rt = rt or runtime()
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_is_shared)
    if not all(_is_shared(x) for x in leaves):
        raise DistributedError("reveal: every leaf must be a shared tensor")
    if to is not None and not 0 <= to < rt.n_parties:
        raise DistributedError(f"to={to} is not a party (0..{rt.n_parties - 1})")
    receives = rt.is_party and (to is None or rt.holds(to))
    if rt.role == DEALER:
        return None
    shapes = tuple(tuple(x.shares.shape[1:]) for x in leaves)
    program = _open_program(rt, shapes, to, what)
    first = (rt, shapes, to, what) not in _SEEN_OPENS
    _SEEN_OPENS.add((rt, shapes, to, what))
    with _waiting(rt, f"opening {what}", first), jax.set_mesh(rt.party_mesh):
        opened = program(*(x.shares for x in leaves))
        opened.block_until_ready()
    if not receives:
        return None
    row = to if to is not None else (rt.role if isinstance(rt.role, int) else 0)
    if rt.multiprocess:
        block = local_block(opened)[0]
    else:
        block = np.asarray(opened[row])
    values, offset = [], 0
    for x, s in zip(leaves, shapes):
        size = int(np.prod(s, dtype=np.int64))
        raw = block[offset: offset + size].reshape(s)
        values.append(np.asarray(ring.decode(jnp.asarray(raw), x.frac_bits)))
        offset += size
    return jax.tree.unflatten(treedef, values)


_SEEN_OPENS: set = set()

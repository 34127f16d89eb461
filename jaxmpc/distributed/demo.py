"""What ``jaxmpc party-demo`` computes, and the same computation simulated in one
process (:func:`simulate`): the reference a distributed run must match bit for bit.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import numpy as np

from jaxmpc import ring
from jaxmpc.distributed.feed import recorded
from jaxmpc.tensor import SharedTensor

@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """What ``jaxmpc party-demo`` runs: a secure product, a comparison and a few training steps."""

    parties: int = 2
    steps: int = 3
    batch_size: int = 64
    frac_bits: int = ring.DEFAULT_FRAC_BITS
    activation: str = "relu"
    trunc: str = "dealer"
    lr: float = 0.02
    seed: int = 1
    size: int = 8  # elements of the product / comparison demo


def demo_train_config(c: DemoConfig):
    from jaxmpc import train

    return train.TrainConfig(
        parties=c.parties, epochs=1, n_train=c.steps * c.batch_size, n_test=c.batch_size,
        batch_size=c.batch_size, test_batch_size=c.batch_size, lr=c.lr, frac_bits=c.frac_bits,
        activation=c.activation, trunc=c.trunc, seed=c.seed,
    ).validate()


def demo_keys(c: DemoConfig) -> dict[str, jax.Array]:
    """Every role's keys, derived like :func:`jaxmpc.train.train` does from one seed.

    In the demo all processes derive them from the same ``--seed`` so that the
    run can be checked bit for bit against the simulation; each process
    *uses* only its role's keys (parties pass placeholders for the dealer's).
    In a deployment each role would hold only its own secret seed.
    """
    root = jax.random.key(c.seed)
    k_init, k_model, k_data, k_test, k_opt, k_steps, k_eval = jax.random.split(root, 7)
    k_demo = jax.random.fold_in(root, 1000)
    return {
        # model owner (party 0)
        "init": k_init, "model": k_model,
        # data owners: worker w uses fold_in(data, w)
        "data": k_data,
        # owners of the product demo's inputs (party 0 and party 1)
        "x": jax.random.fold_in(k_demo, 0), "y": jax.random.fold_in(k_demo, 1),
        # the dealer
        "opt": k_opt, "steps": k_steps, "mul": jax.random.fold_in(k_demo, 2),
    }


DEALER_KEYS = ("opt", "steps", "mul")


def demo_inputs(c: DemoConfig) -> tuple[np.ndarray, np.ndarray]:
    """The product demo's plaintexts: ``x`` (party 0's) and ``y`` (party 1's)."""
    rng = np.random.default_rng(c.seed)
    return rng.uniform(-4, 4, c.size), rng.uniform(-4, 4, c.size)


def demo_secure_ops(x: SharedTensor, y: SharedTensor, key: jax.Array) -> dict[str, SharedTensor]:
    """The secure part of the product demo: ``x*y``, ``[x < y]`` and ``relu(x)``
    (the comparisons only when :mod:`jaxmpc.protocols.comparison` is there)."""
    from jaxmpc.protocols import arithmetic

    k_mul, k_cmp, k_relu = jax.random.split(key, 3)
    out = {"product": arithmetic.mul(x, y, k_mul)}
    try:
        from jaxmpc.protocols import comparison
    except ImportError:
        return out
    out["less"] = comparison.lt(x, y, k_cmp)
    out["relu"] = comparison.relu(x, k_relu)[0]
    return out


def demo_data(c: DemoConfig):
    """Training batches (plaintext, every worker's) from the offline MNIST subset."""
    from jaxmpc import data

    tc = demo_train_config(c)
    ds = data.load_mnist("offline", n_train=tc.n_train, n_test=tc.n_test, seed=0)
    xb, yb = data.batches(data.normalize(ds.x_train), data.one_hot(ds.y_train), c.batch_size)
    return ds.source, xb, yb


def _batch_step(step: Callable) -> Callable:
    def run(params, opt_state, xs, ys, i, key):
        return step(params, opt_state, xs[i], ys[i], key)

    return run


def simulate(c: DemoConfig) -> dict[str, Any]:
    """The whole demo in one process, simulated (vmap over the party axis):
    the reference the distributed run must match bit for bit."""
    from jaxmpc import nn, optim, tensor, train

    keys = demo_keys(c)
    n = c.parties
    x, y = demo_inputs(c)
    xs_ = tensor.share(x, keys["x"], n, c.frac_bits)
    ys_ = tensor.share(y, keys["y"], n, c.frac_bits)
    ops, feed = recorded(demo_secure_ops, n)(xs_, ys_, keys["mul"])
    out = {"x_shares": xs_, "y_shares": ys_, "ops": ops, "feed": SharedTensor(feed, 0),
           "ops_revealed": {k: np.asarray(tensor.reveal(v)) for k, v in ops.items()}, "losses": [], "step_times": []}
    if c.steps == 0:
        return out
    tc = demo_train_config(c)
    _, xb, yb = demo_data(c)
    params = nn.share_params(nn.init_mlp(keys["init"]), keys["model"], n, c.frac_bits)
    sx, sy = train.share_batches(np.asarray(xb).reshape(-1, xb.shape[-1]), np.asarray(yb).reshape(-1, yb.shape[-1]),
                                 c.batch_size, keys["data"], n, c.frac_bits)
    opt = optim.sgd(tc.lr, keys["opt"], tc.momentum, trunc=tc.trunc)
    state = opt.init(params)
    step = jax.jit(_batch_step(train.make_train_step(tc, opt)))
    losses, times, cpu = [], [], []
    for i in range(c.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        params, state, loss = step(params, state, sx, sy, np.int32(i), jax.random.fold_in(keys["steps"], i))
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        losses.append(float(tensor.reveal(loss)))
    out.update(data_x=sx, data_y=sy, params=params, losses=losses, model=nn.reconstruct_params(params),
               step_times=times, step_cpu=cpu)
    return out

"""The encrypted-training workflow: server, workers, crypto provider.

1. The server initialises the model and secret-shares it among the workers.
2. Each worker secret-shares its own batches of data and one-hot labels
   (worker ``w`` owns batches ``w, w+n, w+2n, ...``); the plaintext is dropped.
3. The workers train with SGD on shares; the dealer's randomness is drawn
   inside the same jit-compiled step. Only the losses chosen for logging are
   revealed.
4. Test accuracy is computed on shares (argmax on shares, compared with
   shared labels); only the number of correct predictions is revealed.
5. The workers send their shares of the trained model to the server, which
   decrypts it.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import sys
import time
import zipfile
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmpc import autodiff as ad
from jaxmpc import cost, data, losses, nn, optim, prg, ring, tensor
from jaxmpc.protocols import arithmetic
from jaxmpc.tensor import SharedTensor

LOSSES = ("mse", "xent")
#: PRNG implementations for the dealer and all sharing randomness (jax.random key impls);
#: ``aes`` (:mod:`jaxmpc.prg`) is the default, the others are JAX's own.
PRNGS = {"aes": prg.AES, "threefry": "threefry2x32", "rbg": "rbg"}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; the defaults are the reference run."""

    parties: int = 2
    epochs: int = 10
    n_train: int = 640
    n_test: int = 640
    batch_size: int = 64
    test_batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.0
    frac_bits: int = ring.DEFAULT_FRAC_BITS
    activation: str = "relu"
    loss: str = "mse"
    trunc: str = "dealer"
    seed: int = 1
    data: str = "offline"
    data_dir: str | None = None
    max_batches: int | None = None  # stop each epoch after this many batches (smoke runs)
    prng: str = "aes"  # AES-128-CTR (jaxmpc.prg); "rbg" and "threefry" are jax.random's

    def validate(self) -> "TrainConfig":
        def positive(name: str, lo: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")

        for name in ("epochs", "n_train", "n_test", "batch_size", "test_batch_size"):
            positive(name)
        positive("parties", 2)
        if self.max_batches is not None:
            positive("max_batches")
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size={self.batch_size} is larger than n_train={self.n_train}")
        if self.test_batch_size > self.n_test:
            raise ValueError(f"test_batch_size={self.test_batch_size} is larger than n_test={self.n_test}")
        nn._check_activation(self.activation)
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; use one of {LOSSES}")
        if self.trunc not in arithmetic.TRUNC_METHODS:
            raise ValueError(f"unknown truncation {self.trunc!r}; use one of {arithmetic.TRUNC_METHODS}")
        if self.trunc == "local" and self.parties != 2:
            raise ValueError("--trunc local works for 2 parties only; use --trunc dealer")
        if self.prng not in PRNGS:
            raise ValueError(f"unknown prng {self.prng!r}; use one of {tuple(PRNGS)}")
        ring.check_frac_bits(self.frac_bits)
        if self.frac_bits < 8:
            raise ValueError(f"frac_bits={self.frac_bits} is too coarse to train; use 12..20")
        if self.frac_bits > 24:
            raise ValueError(
                f"frac_bits={self.frac_bits} is too fine to train: products need |x*y| < 2**(63-2f) "
                "and truncations fail with probability |x*y| * 2**(2f-64); use 12..24"
            )
        optim._check_hyper("lr", self.lr, 1e-6, 10.0)
        optim._check_hyper("momentum", self.momentum, 0.0, 1.0)
        return self


@dataclasses.dataclass
class TrainResult:
    config: TrainConfig
    data_source: str
    correct: int
    n_test: int
    losses: list[float]
    step_times: list[float]
    compile_seconds: float
    params: nn.Params  # plaintext, decrypted by the server
    cost_per_step: cost.Cost
    plaintext: dict[str, Any] | None = None

    @property
    def test_accuracy(self) -> float:
        return self.correct / self.n_test

    def summary(self) -> dict[str, Any]:
        c = self.config
        out = {
            "test_accuracy": self.test_accuracy,
            "correct": self.correct,
            "n_test": self.n_test,
            "n_train": c.n_train,
            "epochs": c.epochs,
            "parties": c.parties,
            "activation": c.activation,
            "loss": c.loss,
            "trunc": c.trunc,
            "frac_bits": c.frac_bits,
            "batch_size": c.batch_size,
            "lr": c.lr,
            "seed": c.seed,
            "prng": c.prng,
            "data_source": self.data_source,
            "secure_step_ms_median": 1e3 * statistics.median(self.step_times),
            "compile_seconds": self.compile_seconds,
            "rounds_per_step": self.cost_per_step.rounds,
            "bytes_per_step": self.cost_per_step.bytes_per_party,
            "bytes_per_step_total": self.cost_per_step.bytes_total,
            "final_loss": self.losses[-1] if self.losses else None,
            "backend": jax.default_backend(),
        }
        if self.plaintext:
            out.update(self.plaintext)
        return out


# --------------------------------------------------------------- the pieces


def loss_fn(config: TrainConfig, grad_scale: float | None = None) -> Callable[..., SharedTensor]:
    """``loss(params, x, y, key)`` on shares, differentiable by ``jaxmpc.value_and_grad``
    (gradients multiplied by ``grad_scale``, see :func:`jaxmpc.nn.mlp`)."""

    def loss(params, x, y, key):
        k_model, k_loss = jax.random.split(key)
        logits = nn.mlp(params, x, k_model, activation=config.activation, trunc=config.trunc, grad_scale=grad_scale)
        if config.loss == "xent":
            return losses.softmax_cross_entropy(logits, y, k_loss, trunc=config.trunc)
        return losses.mse(logits, y, k_loss, trunc=config.trunc)

    return loss


def _folds_learning_rate(config: TrainConfig) -> bool:
    """Whether the step folds the learning rate into the weight gradients'
    truncations (:func:`make_optimizer`): only the dealer's fused truncation can."""
    return config.trunc == "dealer"


def make_optimizer(config: TrainConfig, key: jax.Array) -> tuple[optax.GradientTransformation, float | None]:
    """The main job's SGD and the ``grad_scale`` its step must use.

    With dealer truncation the learning rate is folded into the backward
    pass (each weight gradient's truncation scales by it for free), so SGD
    needs no truncation of its own: about a fifth fewer dealer words and one
    round less per step than ``optim.sgd(lr)`` on plain gradients, which
    stays the path for local truncation and for other optimizers.
    """
    fold = _folds_learning_rate(config)
    opt = optim.sgd(config.lr, key, config.momentum, trunc=config.trunc, prescaled=fold)
    return opt, (config.lr if fold else None)


def premasks_weights(config: TrainConfig) -> bool:
    """Whether the main job trains with :class:`~jaxmpc.protocols.arithmetic.Premasked`
    weights: with the learning rate folded in (dealer truncation) and no
    momentum, SGD keeps a premasked weight premasked, so each weight is opened
    once under a dealer mask before training and never again (a quarter
    fewer bytes per step). Other settings train plain shares."""
    return _folds_learning_rate(config) and config.momentum == 0


def training_params(config: TrainConfig, params: nn.Params, key: jax.Array) -> nn.Params:
    """The shared parameters in the form the main job's step trains (see
    :func:`premasks_weights`): weights premasked (one opening each), or as given."""
    return nn.premask_params(params, key, split=False) if premasks_weights(config) else params


def training_data(config: TrainConfig, xs: SharedTensor, key: jax.Array) -> SharedTensor | arithmetic.Premasked:
    """The shared training inputs as the main job's step reads them: with
    premasked weights (:func:`premasks_weights`), premasked once too -- each
    input is opened as ``x - a`` under a dealer mask kept for the whole run
    (SecureML's ``X - U``), so the first layer's product opens nothing per
    step and the dealer draws no mask for it. Otherwise as given."""
    return arithmetic.premask(xs, key, split=False) if premasks_weights(config) else xs


def make_train_step(config: TrainConfig, optimizer: optax.GradientTransformation, grad_scale: float | None = None):
    """One SGD step on shares: forward, encrypted backward, update. Not jitted here.

    ``grad_scale`` multiplies the gradients the optimizer receives (pair it
    with an optimizer that expects that, as :func:`make_optimizer` does).
    """
    loss = loss_fn(config, grad_scale)

    def step(params, opt_state, x, y, key):
        value, grads = ad.value_and_grad(loss)(params, x, y, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def make_eval_step(config: TrainConfig):
    """Shares of the number of correct predictions in a batch (nothing opened
    except inside the comparison protocols). ``params`` may be shared or, to
    open the weights' masks once for all batches, :func:`jaxmpc.nn.premask_params`."""
    from jaxmpc.protocols import comparison

    def evaluate(params, x, y, key):
        k_model, k_arg, k_mul = jax.random.split(key, 3)
        logits = nn.mlp(params, x, k_model, activation=config.activation, trunc=config.trunc)
        pred = comparison.argmax(logits, k_arg, axis=-1)  # shared one-hot
        return arithmetic.mul(pred, y, k_mul, trunc=config.trunc).sum()

    return evaluate


def share_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, key: jax.Array, n_parties: int, frac_bits: int
) -> tuple[SharedTensor, SharedTensor]:
    """The private data loader: worker ``w`` secret-shares batches ``w::n``.

    Returns shared ``(n_batches, batch, ...)`` inputs and labels in batch order.
    """
    xb, yb = data.batches(x, y, batch_size)
    nb = xb.shape[0]
    order = np.concatenate([np.arange(w, nb, n_parties) for w in range(n_parties)])
    parts_x, parts_y = [], []
    for w in range(n_parties):
        mine = np.arange(w, nb, n_parties)
        if mine.size == 0:
            continue
        kw = jax.random.fold_in(key, w)
        parts_x.append(tensor.share(xb[mine], jax.random.fold_in(kw, 0), n_parties, frac_bits))
        parts_y.append(tensor.share(yb[mine], jax.random.fold_in(kw, 1), n_parties, frac_bits))
    inverse = np.argsort(order)
    sx = tensor.concatenate(parts_x, axis=0)[inverse]
    sy = tensor.concatenate(parts_y, axis=0)[inverse]
    return sx, sy


def _median_ms(times: list[float]) -> float:
    return 1e3 * statistics.median(times)


def train_plaintext(config: TrainConfig, params: nn.Params, xb, yb, xt, yt) -> dict[str, Any]:
    """The same training in plain JAX float32, same initialisation and batch order."""
    opt = optax.sgd(config.lr, momentum=config.momentum or None)

    def loss(p, x, y):
        logits = nn.mlp_plain(p, x, activation=config.activation)
        if config.loss == "xent":
            return optax.softmax_cross_entropy(logits, y).mean()
        return losses.mse_plain(logits, y)

    @jax.jit
    def step(p, s, x, y):
        v, g = jax.value_and_grad(loss)(p, x, y)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, v

    p = jax.tree.map(jnp.asarray, params)
    s = opt.init(p)
    times = []
    n_batches = xb.shape[0] if config.max_batches is None else min(config.max_batches, xb.shape[0])
    for _ in range(config.epochs):
        for i in range(n_batches):
            t0 = time.perf_counter()
            p, s, v = jax.block_until_ready(step(p, s, xb[i], yb[i]))
            times.append(time.perf_counter() - t0)
    pred = jnp.argmax(nn.mlp_plain(p, jnp.asarray(xt), activation=config.activation), axis=-1)
    correct = int(jnp.sum(pred == jnp.asarray(yt).astype(pred.dtype)))
    return {
        "plaintext_test_accuracy": correct / len(yt),
        "plaintext_correct": correct,
        "plaintext_step_ms_median": _median_ms(times[1:] or times),
        "plaintext_final_loss": float(v),
    }


def train(
    config: TrainConfig = TrainConfig(),
    *,
    log: Callable[[str], None] = print,
    log_every: int = 1,
    progress: bool = False,
    compare_plaintext: bool = False,
) -> TrainResult:
    """Run the whole workflow. ``log_every=0`` logs no batch; ``progress``
    shows a progress bar (on stderr) instead."""
    config = config.validate()
    n = config.parties
    ds = data.load_mnist(config.data, path=config.data_dir, n_train=config.n_train, n_test=config.n_test, seed=0)
    log(f"data: {ds.source}")
    n_whole = (len(ds.x_test) // config.test_batch_size) * config.test_batch_size
    if n_whole < len(ds.x_test):
        log(
            f"test: evaluating {n_whole} of {len(ds.x_test)} items "
            f"(whole batches of {config.test_batch_size}; the last {len(ds.x_test) - n_whole} are left out)"
        )
    x_train, x_test = data.normalize(ds.x_train), data.normalize(ds.x_test)
    y_train = data.one_hot(ds.y_train)
    n_test = (len(x_test) // config.test_batch_size) * config.test_batch_size

    root = jax.random.key(config.seed, impl=PRNGS[config.prng])
    k_init, k_model, k_data, k_test, k_opt, k_steps, k_eval = jax.random.split(root, 7)

    # 1. the server's model, shared among the workers
    params_plain = nn.init_mlp(k_init)
    params = nn.share_params(params_plain, k_model, n, config.frac_bits)
    # 2. the workers' private data
    xs, ys = share_batches(x_train, y_train, config.batch_size, k_data, n, config.frac_bits)
    xt, yt = share_batches(
        x_test[:n_test], data.one_hot(ds.y_test[:n_test]), config.test_batch_size, k_test, n, config.frac_bits
    )
    n_batches = xs.shape[0] if config.max_batches is None else min(config.max_batches, xs.shape[0])
    log(
        f"parties: {n} workers + dealer; model {nn.MNIST_MLP} {config.activation}, "
        f"{config.frac_bits} fractional bits, truncation: {config.trunc}"
    )

    optimizer, grad_scale = make_optimizer(config, k_opt)
    params = jax.jit(functools.partial(training_params, config))(params, jax.random.fold_in(k_opt, 1))
    xs = jax.jit(functools.partial(training_data, config))(xs, jax.random.fold_in(k_opt, 2))
    opt_state = optimizer.init(params)
    step_fn = make_train_step(config, optimizer, grad_scale)
    step_cost = cost.cost_of(step_fn, params, opt_state, xs[0], ys[0], k_steps)
    log(f"cost per training step: {step_cost.rounds} rounds, {step_cost.bytes_per_party / 2**20:.2f} MiB sent per party")

    def indexed_step(params, opt_state, xs, ys, k_steps, t):
        # batch and key derived inside the one compiled program: no per-step
        # host dispatches (a key derivation alone is a ~1 ms program here)
        i = t % n_batches
        return step_fn(params, opt_state, xs[i], ys[i], jax.random.fold_in(k_steps, t))

    reveal = jax.jit(tensor.reveal)
    t0 = time.perf_counter()
    step = jax.jit(indexed_step, donate_argnums=(0, 1)).lower(
        params, opt_state, xs, ys, k_steps, jnp.int32(0)
    ).compile()
    compile_seconds = time.perf_counter() - t0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs * n_batches, unit="batch", file=sys.stderr, desc="secure training")
    losses_seen, times = [], []
    b = config.batch_size
    for epoch in range(1, config.epochs + 1):
        for i in range(n_batches):
            t = jnp.int32((epoch - 1) * n_batches + i)
            t0 = time.perf_counter()
            params, opt_state, loss_sh = step(params, opt_state, xs, ys, k_steps, t)
            jax.block_until_ready(params)
            times.append(time.perf_counter() - t0)
            if log_every and (i % log_every == 0 or i == n_batches - 1):
                loss = float(reveal(loss_sh))  # the one value revealed per logged batch
                losses_seen.append(loss)
                msg = (
                    f"Train Epoch: {epoch} [{i * b}/{n_batches * b} ({100 * i / n_batches:.0f}%)]"
                    f"\tLoss: {loss:.6f}\tTime: {times[-1]:.4f}s"
                )
                bar.write(msg) if bar else log(msg)
            if bar:
                bar.update(1)
    if bar:
        bar.close()

    # 4. encrypted evaluation: only the count is revealed
    evaluate = jax.jit(make_eval_step(config))
    masked = jax.jit(nn.premask_params)(params, jax.random.fold_in(k_eval, xt.shape[0]))  # weights opened once, masked
    correct_sh = None
    for i in range(xt.shape[0]):
        c = evaluate(masked, xt[i], yt[i], jax.random.fold_in(k_eval, i))
        correct_sh = c if correct_sh is None else correct_sh + c
    correct = int(round(float(tensor.reveal(correct_sh, what="correct_count"))))
    log(f"Test set: Accuracy: {correct}/{n_test} ({100 * correct / n_test:.0f}%)")

    # 5. the model goes back to the server
    trained = nn.reconstruct_params(params)
    result = TrainResult(
        config, ds.source, correct, n_test, losses_seen, times[1:] or times, compile_seconds, trained, step_cost
    )
    if compare_plaintext:
        xb, yb = data.batches(x_train, y_train, config.batch_size)
        result.plaintext = train_plaintext(config, params_plain, xb, yb, x_test[:n_test], ds.y_test[:n_test])
        log(
            f"plaintext: accuracy {100 * result.plaintext['plaintext_test_accuracy']:.1f}%, "
            f"step {result.plaintext['plaintext_step_ms_median']:.3f} ms"
        )
    return result


def save_params(path: str, params: nn.Params) -> None:
    """Save plaintext parameters as ``.npz`` atomically (no half-written file)."""
    import os
    import tempfile

    arrays = {f"{i}_{name}": np.asarray(v) for i, layer in enumerate(params) for name, v in layer.items()}
    directory = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_params(path: str) -> nn.Params:
    """Load parameters saved by :func:`save_params`, checking the layout."""
    try:
        with open(path, "rb") as fh, np.load(fh) as f:
            files = dict(f)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read model file {path!r}: {e}") from None
    layers: dict[int, dict[str, np.ndarray]] = {}
    for name, arr in files.items():
        idx, _, key = name.partition("_")
        if not idx.isdigit() or key not in ("w", "b"):
            raise ValueError(f"model file {path!r} has an unexpected entry {name!r}")
        layers.setdefault(int(idx), {})[key] = arr
    if sorted(layers) != list(range(len(layers))) or any(set(l) != {"w", "b"} for l in layers.values()):
        raise ValueError(f"model file {path!r} is incomplete: layers {sorted(layers)}")
    return [layers[i] for i in range(len(layers))]


def accuracy_plain(params: nn.Params, x: np.ndarray, y: np.ndarray, activation: str = "relu") -> float:
    """Plaintext accuracy of decrypted parameters on normalised inputs."""
    p = jax.tree.map(jnp.asarray, params)
    pred = jnp.argmax(nn.mlp_plain(p, jnp.asarray(x), activation=activation), axis=-1)
    return float(jnp.mean(pred == jnp.asarray(y).astype(pred.dtype)))

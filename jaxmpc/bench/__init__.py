"""``jaxmpc bench``: timings of the protocols and of secure training/inference.

What is measured, for every benchmark (all on the default JAX backend: the CPU,
or the GPU when ``jax.devices()`` has one; every party is simulated in one
process, see :func:`jaxmpc.spmd.party_map`):

* **run time** of the jit-compiled secure computation, after compilation and
  two warm-up calls: median, min and max over ``--repeats`` calls, each ended
  by ``block_until_ready``, and the median process CPU time per call (all
  threads), which other processes' load hardly inflates;
* **compile time** (``jax.jit(fn).lower(...).compile()``), reported apart;
* the same computation in **plain JAX float32** (where a twin exists), timed
  in the same loop (calls are interleaved, so background load hits both alike),
  and the ratio secure / plain;
* the **dealer's share**: every call of a public ``jaxmpc.dealer`` function
  made while tracing the computation is recorded (its static arguments and
  output shapes). Two extra programs are then compiled: *dealer*, which makes
  exactly those correlations (same functions, same shapes) and nothing else,
  and *online*, the computation with each dealer call replaced by the next of
  a list of precomputed correlations passed in as arguments (randomness
  precomputed). ``dealer_ms + online_ms`` need not equal the fused
  ``median_ms``: XLA fuses and schedules the two parts together there. The
  split is checked by counting the PRNG words each program draws; any
  mismatch is reported in the record's ``note``;
* **rounds and bytes** per party from :func:`jaxmpc.cost.cost_of` (trace-time,
  see :mod:`jaxmpc.cost` for the conventions), and an *estimate* of the wall
  time over a network, ``t = compute + rounds * RTT + bytes_per_party /
  bandwidth`` for a LAN (10 Gbit/s, 0.2 ms RTT) and a WAN (100 Mbit/s, 40 ms
  RTT), with ``compute`` = the measured simulated time (all parties on one
  machine, dealer included: an upper bound for one party's compute);
* for a short training run: resident memory after each epoch (does it stay
  flat?) and the process's peak (``getrusage``), plus the device allocator's
  statistics where the backend has them (GPU).

Benchmarks are selected by name (``--only``); names look like
``matmul/64x784x128/2p``, ``train_step/relu/2p``, ``inference/square/3p``.

Modules: :mod:`~jaxmpc.bench.cases` (protocol cases and their plain twins),
:mod:`~jaxmpc.bench.e2e` (training/inference cases on the reference MLP),
:mod:`~jaxmpc.bench.suite` (the list and ``--only``),
:mod:`~jaxmpc.bench.dealer_split` (dealer and online programs),
:mod:`~jaxmpc.bench.timing` (the measuring), :mod:`~jaxmpc.bench.netmodel`
(LAN/WAN estimate), :mod:`~jaxmpc.bench.report` (table, derived figures,
plot), :mod:`~jaxmpc.bench.cli` (the subcommand). The names below are
re-exported so that ``from jaxmpc import bench; bench.run(...)`` keeps working.
"""

from jaxmpc.bench.cases import BATCH, CLASSES, MATMUL_SHAPES, Built, Case
from jaxmpc.bench.cli import (
    DEFAULT_REPEATS,
    EPILOG,
    MEMORY_EPOCHS,
    MEMORY_EPOCHS_QUICK,
    QUICK_REPEATS,
    add_parser,
    main,
    run,
)
from jaxmpc.bench.dealer_split import (
    ArrayArg,
    DealerCall,
    dealer_inputs,
    dealer_program,
    online_program,
    random_words,
    trace_cost_and_dealer,
)
from jaxmpc.bench.e2e import step_composition
from jaxmpc.bench.netmodel import NETWORKS, network_estimate_ms
from jaxmpc.bench.report import (
    TARGETS,
    breakdowns,
    device_description,
    format_report,
    format_table,
    plot,
    relu_vs_square,
    source_revision,
    target_report,
)
from jaxmpc.bench.suite import all_cases, select
from jaxmpc.bench.timing import MEMORY_BATCHES, MIB, run_case, run_memory, time_interleaved

__all__ = [
    "ArrayArg",
    "BATCH",
    "Built",
    "CLASSES",
    "Case",
    "DEFAULT_REPEATS",
    "DealerCall",
    "EPILOG",
    "MATMUL_SHAPES",
    "MEMORY_BATCHES",
    "MEMORY_EPOCHS",
    "MEMORY_EPOCHS_QUICK",
    "MIB",
    "NETWORKS",
    "QUICK_REPEATS",
    "TARGETS",
    "add_parser",
    "all_cases",
    "breakdowns",
    "dealer_inputs",
    "dealer_program",
    "device_description",
    "format_report",
    "format_table",
    "main",
    "network_estimate_ms",
    "online_program",
    "plot",
    "random_words",
    "relu_vs_square",
    "run",
    "run_case",
    "run_memory",
    "select",
    "source_revision",
    "step_composition",
    "target_report",
    "time_interleaved",
    "trace_cost_and_dealer",
]

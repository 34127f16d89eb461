"""Audit of a compiled party program: the words each kind of collective moves,
next to what the protocol's recorded openings (:mod:`jaxmpc.cost`) account for.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

_COLLECTIVE = re.compile(
    r"=\s*(\([^=]*?\)|\S+)\s+(all-reduce|all-gather|collective-permute|all-to-all|reduce-scatter|"
    r"collective-broadcast|all-reduce-start|all-gather-start|collective-permute-start)\("
)


_SHAPE = re.compile(r"[a-z]+[0-9]*\[([0-9,]*)\]")


def audit_collectives(hlo: str, openings: Sequence[Any], n_parties: int) -> dict[str, Any]:
    """Words per party moved by each kind of collective in a compiled program,
    next to what the recorded openings account for. ``ok`` is True when they
    are equal kind by kind and there is no other kind of collective."""
    found: dict[str, int] = {}
    for m in _COLLECTIVE.finditer(hlo):
        kind = m.group(2).replace("-start", "")
        words = 0
        for dims in _SHAPE.findall(m.group(1)):
            words += int(np.prod([int(d) for d in dims.split(",") if d], dtype=np.int64))
        if kind == "all-gather":
            words //= n_parties  # the result holds every party's block
        found[kind] = found.get(kind, 0) + words
    expected = {"all-reduce": 0, "all-gather": 0, "collective-permute": 0}
    for o in openings:
        if o.domain == "arith":
            expected["all-reduce"] += o.elements
        elif o.domain == "xor":
            expected["all-gather"] += o.elements
        elif o.domain == "send":
            expected["collective-permute"] += (n_parties - 1) * o.elements
    expected = {k: v for k, v in expected.items() if v}
    return {"compiled": found, "recorded": expected, "ok": found == expected}

"""The network model: an *estimate* of the wall time over a LAN or a WAN from
the measured (simulated, one-machine) time and the trace-time rounds and bytes
per party, ``t = compute + rounds * RTT + bytes_per_party / bandwidth``."""

from __future__ import annotations


#: The network model of the estimates: per network, the bandwidth in bit/s and the round-trip time in ms.
NETWORKS = {
    "lan": {"bandwidth_bit_per_s": 10e9, "rtt_ms": 0.2},
    "wan": {"bandwidth_bit_per_s": 100e6, "rtt_ms": 40.0},
}


def network_estimate_ms(compute_ms: float, rounds: int, bytes_per_party: int, network: str) -> float:
    net = NETWORKS[network]
    return compute_ms + rounds * net["rtt_ms"] + 1e3 * bytes_per_party * 8 / net["bandwidth_bit_per_s"]


def estimates_ms(compute_ms: float, rounds: int, bytes_per_party: int) -> dict[str, float]:
    """``{"lan_est_ms": ..., "wan_est_ms": ...}``: the estimate for every network of :data:`NETWORKS`."""
    return {f"{net}_est_ms": network_estimate_ms(compute_ms, rounds, bytes_per_party, net) for net in NETWORKS}

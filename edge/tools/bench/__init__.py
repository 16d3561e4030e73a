"""``edge bench``: latency, throughput and footprint of the real daemon on this box.

The bench starts a private mosquitto and the real daemon (``edge run`` as a child
process), writes real four-view studies into its watch folder in three encodings
and times every stage, then runs a naive script-like pipeline on the same files
and model for comparison. ``docs/bench.md`` defines every figure it reports.

    corpus (real studies, three encodings) -> isolated compute (in-process)
      -> daemon: e2e, e2e_burst, burst -> daemon: idle, soak -> naive baseline
      -> report (table, JSON, chart)

The appliance never imports this package; only ``edge bench`` does.
"""

from __future__ import annotations


class BenchError(RuntimeError):
    """The bench could not measure: a child did not start, a result never came."""

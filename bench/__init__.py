"""Footfall bench: a load generator that measures latency honestly and verifies delivery end to end.

``python -m bench`` drives the gateway (closed loop, the original ticking mode, or an
open model at a constant arrival rate) and can write a run file (``--json``).
``python -m bench verify RUN.json --record-directory DIR`` then checks that every report
the gateway acknowledged landed in the sink's files exactly once, byte for byte, in its
partition, order and date folder (reports of other runs in the directory are told apart by
the run id in their userIds).
"""

from bench.errors import BenchError
from bench.settings import BenchSettings, VerifySettings

__all__ = ["BenchError", "BenchSettings", "VerifySettings"]

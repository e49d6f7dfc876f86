"""Fault injector for a real sink process (on ``PYTHONPATH`` only in tests/sink/test_liveness.py).

Python imports ``sitecustomize`` at start-up, so every process of the sink under test
(the supervisor and its spawned workers) loads this. It arms two faults in aiokafka's
fetcher, triggered by a signal to one worker:

- ``SIGUSR1``: the next fetch request fails with the ``RuntimeError`` a write on a
  transport closed by a connection reset raises (seen with ``ss -K`` on the broker port),
  so aiokafka's fetch task dies ("Unexpected error in fetcher routine") while the
  consumer keeps heartbeating;
- ``SIGUSR2``: every fetch request from then on hangs (a connection that swallows
  requests): the fetch task lives, but no record arrives.

A deterministic trigger for what a connection reset does by chance (2 runs in 3).
"""

from __future__ import annotations

import asyncio
import os
import signal

if os.environ.get("FOOTFALL_TEST_FETCH_FAULTS") == "1":
    from aiokafka.consumer import fetcher as _fetcher  # type: ignore[import-untyped]

    _armed = {"fail": False, "hang": False}

    def _arm(signum: int, frame: object) -> None:
        _armed["fail" if signum == signal.SIGUSR1 else "hang"] = True

    signal.signal(signal.SIGUSR1, _arm)
    signal.signal(signal.SIGUSR2, _arm)
    _original = _fetcher.Fetcher._proc_fetch_request

    async def _proc_fetch_request(self, assignment, node_id, request):  # type: ignore[no-untyped-def]
        if _armed["fail"]:
            _armed["fail"] = False
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True reading=False>")
        if _armed["hang"]:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                return False  # as aiokafka's own fetch request does when the fetcher closes
        return await _original(self, assignment, node_id, request)

    _fetcher.Fetcher._proc_fetch_request = _proc_fetch_request

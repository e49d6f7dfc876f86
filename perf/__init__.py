"""Footfall's perf suite: micro-benchmarks, end-to-end scenarios with same-run references, profiles.

* ``pytest perf/ --benchmark-enable``: the pytest-benchmark micro suites of the roles' hot
  paths (kept out of the default test run).
* ``python -m perf e2e`` (also ``footfall perf e2e``): the pipeline under bench load, with the
  bare Sanic, librdkafka and per-report references measured in the same run
  (:mod:`perf.e2e`), results in ``perf/results/<timestamp>.json`` and ``.md``.
* ``python -m perf profile gateway|sink``: a py-spy flame graph of one service under load
  (:mod:`perf.profile`).
* ``python -m perf compare BASELINE.json CURRENT.json``: the regression guard on ratios.
"""

__all__: list[str] = []

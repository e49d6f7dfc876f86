"""Same-run references for ``perf e2e``: the ceilings the pipeline's figures are divided by."""

__all__: list[str] = []

"""Runs Footfall's roles together: the ``footfall`` command, the embedded broker, ``footfall up``."""

__all__: list[str] = []

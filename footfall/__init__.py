"""Footfall's shared core: report schemas, generator, settings, logging, metrics, Kafka helpers.

The core imports no role (gateway, sink, bench, dashboard); every role imports it.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"

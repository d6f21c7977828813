"""runner: a declarative scene runner for museum and escape-room rooms."""

__version__ = "0.1.0"

"""Composition root: settings, CLI, logging and the embedded runner."""

__version__ = "0.1.0"

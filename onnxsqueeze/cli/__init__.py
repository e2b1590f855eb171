"""The ``onnxsqueeze`` command line. :func:`main` is the entry point (see ``_entry``)."""

from onnxsqueeze.cli._entry import main

__all__ = ["main"]

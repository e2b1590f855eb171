"""The ``onnxsqueeze`` command line. :func:`main` is the entry point (see ``_boundary``)."""

from onnxsqueeze.cli._boundary import main

__all__ = ["main"]

"""The one exception family of onnxsqueeze.

``str(e)`` is the message a user sees: one line, naming the file or object and the problem.
``exit_code`` is what the CLI exits with: 2 for bad input, 1 for a check that failed, 3 when
``squeeze`` found nothing better than the original on its objective.
"""

from __future__ import annotations


class SqueezeError(Exception):
    """Base class of every error onnxsqueeze raises on purpose."""

    exit_code: int = 2


class ModelLoadError(SqueezeError):
    """A model file is missing, unreadable, not ONNX, or fails the checker."""


class InputError(SqueezeError):
    """A command-line or API argument is malformed (a bad ``--input-shape``, a missing data file)."""


class ConversionError(SqueezeError):
    """A framework model could not be converted to ONNX."""


class UnsupportedModelError(SqueezeError):
    """The model is valid but a technique cannot be applied to it (the message says which node)."""


class VerificationError(SqueezeError):
    """A result differs from its reference beyond the tolerance."""

    exit_code = 1


class BudgetNotMetError(SqueezeError):
    """No candidate fits the accuracy budget."""

    exit_code = 1


class ObjectiveNotImprovedError(SqueezeError):
    """Candidates fit the accuracy budget but none beats the original on the objective.

    ``squeeze`` still writes the Pareto-front models within budget (``OUT/pareto/``) and the
    report says what each improves; the exit code (3) tells it apart from a failed check (1).
    """

    exit_code = 3


class GateFailedError(SqueezeError):
    """A benchmark gate (``--fail-if``) failed."""

    exit_code = 1


def one_line(text: object) -> str:
    """The first non-blank line of ``text`` (an exception or any object), cut to 300 characters.

    This is how a foreign exception (protobuf, onnxruntime, torch) becomes part of a one-line
    SqueezeError message: ``raise ModelLoadError(f"{path}: cannot parse: {one_line(e)}") from e``.
    An exception with an empty message gives its class name.
    """
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    first = lines[0] if lines else type(text).__name__
    return first if len(first) <= 300 else first[:297] + "..."

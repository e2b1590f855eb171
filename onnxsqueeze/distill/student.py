"""Student specs: a catalog name, a user's ``package.module:callable``, or ``sepconv:<spec>``.

- ``NAME``: a student from the catalog in :mod:`.catalog` (``cnn4`` ... ``resnet18``,
  ``mlp``, ``transformer``), built for the teacher's input shape and class count.
- ``package.module:callable``: the callable is imported and called; it gets the keyword arguments
  ``input_shape`` (one sample, no batch axis) and ``num_outputs`` when its signature takes them
  (or ``**kwargs``), and none otherwise. It must return an ``nn.Module``.
- ``sepconv:SPEC``: the student SPEC with every k x k conv made depthwise-separable
  (:mod:`onnxsqueeze.distill.sepconv`).

Every student is checked with one forward pass: it must map ``[N, *input_shape]`` to
``[N, num_outputs]``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Sequence
from typing import Any

from onnxsqueeze.errors import InputError, UnsupportedModelError, one_line

SEPCONV = "sepconv:"


def catalog() -> dict[str, Any]:
    """The catalog's builders by name (:data:`onnxsqueeze.distill.catalog.STUDENTS`)."""
    from onnxsqueeze.distill.catalog import STUDENTS

    return dict(STUDENTS)


@dataclasses.dataclass
class Student:
    """A built student: the module, its spec, and the separable rewrite's report if one was applied."""

    module: Any
    spec: str
    sepconv: Any = None  # onnxsqueeze.distill.sepconv.SepconvReport


def _usage(spec: str, problem: str) -> InputError:
    names = ", ".join(catalog())
    return InputError(
        f"--student '{spec}': {problem}; give a catalog name ({names}), "
        "'package.module:callable' or 'sepconv:<spec>'"
    )


def _from_callable(spec: str, input_shape: tuple[int, ...], num_outputs: int) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise _usage(spec, "expected 'package.module:callable'")
    try:
        mod = importlib.import_module(module_name)
    except ImportError as e:
        raise _usage(spec, f"cannot import module '{module_name}' ({e})") from e
    target: Any = mod
    for part in attr.split("."):
        if not hasattr(target, part):
            raise _usage(spec, f"module '{module_name}' has no attribute '{attr}'")
        target = getattr(target, part)
    if not callable(target):
        raise _usage(spec, f"'{attr}' is not callable")
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    offered = {"input_shape": input_shape, "num_outputs": num_outputs}
    kwargs = {k: v for k, v in offered.items() if var_kw or k in params}
    try:
        return target(**kwargs)
    except Exception as e:
        raise _usage(spec, f"calling it failed: {type(e).__name__}: {e}") from e


def build_student(
    spec: str,
    input_shape: Sequence[int],
    num_outputs: int,
    *,
    example: Any = None,
) -> Student:
    """Build the student a spec names, for one sample of ``input_shape`` and ``num_outputs`` classes.

    Args:
        spec: see the module docstring.
        input_shape: one sample's shape (no batch axis).
        num_outputs: the teacher's class count.
        example: a tensor batch ``[N, *input_shape]``, or a tuple of them for a teacher with
            several inputs (passed positionally), for the shape check and MAC counts (zeros of
            batch 2 by default).

    Raises:
        InputError: the spec names nothing buildable (one line, with the choices).
        UnsupportedModelError: the student's output shape does not match the teacher's.
    """
    import torch
    from torch import nn

    shape = tuple(int(d) for d in input_shape)
    if example is None:
        example = torch.zeros((2, *shape))
    examples = tuple(example) if isinstance(example, tuple | list) else (example,)
    batch = len(examples[0])
    spec = spec.strip()
    if spec.startswith(SEPCONV):
        from onnxsqueeze.distill import sepconv

        inner = build_student(spec[len(SEPCONV) :], shape, num_outputs, example=example)
        report = sepconv.separate_convs(inner.module, examples)
        return Student(inner.module, spec, report)
    if ":" in spec:
        module = _from_callable(spec, shape, num_outputs)
    else:
        builders = catalog()
        if spec not in builders:
            raise _usage(spec, "not a student in the catalog")
        try:
            module = builders[spec](shape, num_outputs)
        except ValueError as e:
            raise InputError(f"--student '{spec}': {e}") from e
    if not isinstance(module, nn.Module):
        raise _usage(spec, f"it returned a {type(module).__name__}, not a torch.nn.Module")
    module.eval()
    try:
        with torch.no_grad():
            y = module(*examples)
    except Exception as e:
        raise UnsupportedModelError(
            f"--student '{spec}': it fails on the teacher's input shape {[batch, *shape]}: "
            f"{type(e).__name__}: {one_line(e)}"
        ) from e
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (batch, num_outputs):
        got = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise UnsupportedModelError(
            f"--student '{spec}': it outputs {got}; the teacher outputs [{batch}, {num_outputs}]"
        )
    return Student(module.train(), spec)

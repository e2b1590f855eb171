"""The student catalog, re-exported for recipes: it lives in :mod:`onnxsqueeze.distill.catalog`.

It moved into the package so that an installed onnxsqueeze (a wheel, no repository checkout) can
build ``--student cnn4``; this module keeps ``from models.students import STUDENTS`` working.
"""

from onnxsqueeze.distill.catalog import (
    STUDENTS,
    Builder,
    cnn,
    mlp,
    mobilenet_v3_small,
    resnet8,
    resnet18,
    transformer,
)

__all__ = ["STUDENTS", "Builder", "cnn", "mlp", "mobilenet_v3_small", "resnet8", "resnet18", "transformer"]

"""Student specs: catalog names, a user's module:callable, sepconv:, and one-line errors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from onnxsqueeze.distill.sepconv import count_params  # noqa: E402
from onnxsqueeze.distill.student import build_student  # noqa: E402
from onnxsqueeze.errors import InputError, UnsupportedModelError  # noqa: E402


def user_student(input_shape, num_outputs):
    """A user's callable taking the teacher's interface."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), num_outputs))


def fixed_student():
    """A user's callable that takes no arguments (a fixed architecture)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)
    )


def not_a_module(input_shape, num_outputs):
    return "nope"


@pytest.mark.parametrize("name", ["cnn4", "cnn8", "resnet8", "mlp", "transformer", "mobilenet_v3_small"])
def test_catalog_students_take_the_teachers_shapes(name: str) -> None:
    s = build_student(name, (1, 32, 32), 10)
    with torch.no_grad():
        assert s.module.eval()(torch.zeros(3, 1, 32, 32)).shape == (3, 10)


def test_large_inputs_get_a_strided_stem() -> None:
    s = build_student("cnn4", (3, 224, 224), 1000)
    assert s.module(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)
    assert s.module[0].stride == (2, 2)


def test_non_image_students() -> None:
    assert build_student("mlp", (20,), 3).module(torch.zeros(2, 20)).shape == (2, 3)
    assert build_student("transformer", (12, 16), 5).module(torch.zeros(2, 12, 16)).shape == (2, 5)
    with pytest.raises(InputError, match=r"--student 'cnn8': student 'cnn8' needs image inputs"):
        build_student("cnn8", (20,), 3)


def test_user_callable_with_and_without_the_interface() -> None:
    s = build_student(f"{__name__}:user_student", (1, 8, 8), 4)
    assert s.module(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    s = build_student(f"{__name__}:fixed_student", (1, 8, 8), 10)
    assert s.module(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_sepconv_spec_rewrites_the_student() -> None:
    plain = build_student("cnn16", (1, 32, 32), 10)
    sep = build_student("sepconv:cnn16", (1, 32, 32), 10)
    assert sep.sepconv is not None and len(sep.sepconv.convs) == 4
    assert sep.sepconv.params_before == count_params(plain.module)
    assert sep.sepconv.params_after == count_params(sep.module) < count_params(plain.module)
    assert sep.module(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuchnet", "not a student in the catalog"),
        ("no_such_pkg.mod:fn", "cannot import module 'no_such_pkg.mod'"),
        (f"{__name__}:missing", "has no attribute 'missing'"),
        (f"{__name__}:not_a_module", "returned a str, not a torch.nn.Module"),
        ("sepconv:nosuchnet", "not a student in the catalog"),
    ],
)
def test_bad_specs_are_one_line_input_errors(spec: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        build_student(spec, (1, 8, 8), 4)
    assert "\n" not in str(info.value)
    assert "cnn4" in str(info.value)  # the message lists the choices


def test_student_with_the_wrong_output_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match=r"outputs \[2, 10\]; the teacher outputs \[2, 4\]"):
        build_student(f"{__name__}:fixed_student", (1, 8, 8), 4)


def test_backbone_swap_adapts_stem_and_head() -> None:
    big = build_student("mobilenet_v3_small", (3, 224, 224), 1000).module
    assert big.features[0][0].stride == (2, 2)  # torchvision's own stem at ImageNet size
    small = build_student("mobilenet_v3_small", (1, 32, 32), 10).module
    assert small.features[0][0].in_channels == 1 and small.features[0][0].stride == (1, 1)
    assert small.classifier[-1].out_features == 10
    r18 = build_student("resnet18", (1, 32, 32), 10).module
    assert r18.conv1.kernel_size == (3, 3) and isinstance(r18.maxpool, nn.Identity)
    assert r18.fc.out_features == 10


def test_catalog_ships_in_the_package_without_the_models_recipes(monkeypatch) -> None:
    import sys

    from onnxsqueeze.distill.student import catalog

    # an installed wheel has no models/ package: the catalog must not need it
    monkeypatch.setitem(sys.modules, "models", None)
    monkeypatch.setitem(sys.modules, "models.students", None)
    assert {"cnn4", "mobilenet_v3_small", "mlp", "transformer"} <= set(catalog())
    assert build_student("cnn4", (1, 8, 8), 3).module(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


def test_models_students_is_the_same_catalog() -> None:
    from models.students import STUDENTS
    from onnxsqueeze.distill.catalog import STUDENTS as packaged

    assert STUDENTS is packaged

"""The pass registry is the one list recipes, ``apply`` and the search's knobs are checked against:
a pass that is written but not registered, or a knob whose pass does not take its options, fails here."""

from __future__ import annotations

import pytest

import onnxsqueeze.passes as passes_pkg
from onnxsqueeze import recipe
from onnxsqueeze.errors import InputError
from onnxsqueeze.passes import PASSES, SqueezePass
from onnxsqueeze.search.knobs import KNOBS, available_knobs


def test_every_exported_pass_is_registered_under_its_own_name() -> None:
    exported = [
        obj
        for obj in vars(passes_pkg).values()
        if isinstance(obj, type) and issubclass(obj, SqueezePass) and obj is not SqueezePass
    ]
    assert exported
    for cls in exported:
        assert cls.name, f"{cls.__name__} has no registry name"
        assert PASSES.get(cls.name) is cls, f"{cls.__name__} is not registered as {cls.name!r}"
    assert len(PASSES) == len(exported)  # and nothing is registered twice or under a stray name


@pytest.mark.parametrize("name", sorted(PASSES))
def test_a_recipe_step_resolves_through_the_registry(name: str) -> None:
    (step,) = recipe.loads(f'[[steps]]\npass = "{name}"\n').steps
    assert step.pass_name == name


def test_an_unknown_pass_names_every_registered_one() -> None:
    with pytest.raises(InputError) as e:
        recipe.loads('[[steps]]\npass = "no-such-pass"\n', source="r.toml")
    msg = str(e.value)
    assert msg.startswith("r.toml: step 1: unknown pass 'no-such-pass'")
    assert all(name in msg for name in PASSES)


def test_every_knob_is_offered_by_a_registered_pass_that_takes_its_options() -> None:
    offered, skipped = available_knobs()
    assert skipped == {}
    assert [k.name for k in offered] == [k.name for k in KNOBS]
    assert all(k.settings == o.settings for k, o in zip(KNOBS, offered, strict=True))

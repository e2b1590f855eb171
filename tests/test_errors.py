"""The error family: messages are one line."""

from __future__ import annotations

from onnxsqueeze.errors import one_line


def test_one_line_takes_the_first_non_blank_line() -> None:
    assert one_line(RuntimeError("\n  first problem  \n  detail\n")) == "first problem"


def test_one_line_names_the_class_of_an_empty_exception() -> None:
    assert one_line(KeyError()) == "KeyError"
    assert one_line(ValueError("   \n")) == "ValueError"


def test_one_line_cuts_long_messages() -> None:
    text = one_line("x" * 1000)
    assert len(text) == 300 and text.endswith("...")

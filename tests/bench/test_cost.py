"""Cost per inference: the formula, the price table, user price files."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxsqueeze.bench.cost import INSTANCES, PRICES_TAKEN, load_prices, resolve_price, usd_per_million
from onnxsqueeze.errors import InputError


def test_formula() -> None:
    # $0.1785/h at 100 items/s: 360,000 items per hour -> $0.49583 per million
    assert usd_per_million(0.1785, 100.0) == pytest.approx(0.1785 / 360_000 * 1e6)
    assert usd_per_million(3.6, 1000.0) == pytest.approx(1.0)
    assert usd_per_million(1.0, 50.0) == pytest.approx(2 * usd_per_million(1.0, 100.0))  # half the rate
    with pytest.raises(ValueError):
        usd_per_million(1.0, 0.0)


def test_table_has_cpu_and_gpu_instances_with_a_date() -> None:
    assert any("T4" in i.hardware or "L4" in i.hardware for i in INSTANCES.values())
    assert any("GPU" not in i.hardware and "NVIDIA" not in i.hardware for i in INSTANCES.values())
    assert all(i.price_per_hour > 0 and i.taken == PRICES_TAKEN for i in INSTANCES.values())


def test_resolve_explicit_and_instance() -> None:
    p = resolve_price(price_per_hour=0.42)
    assert p is not None and p.usd_per_hour == 0.42 and p.label == "--price-per-hour"
    q = resolve_price(instance="g4dn.xlarge")  # short name resolves to aws/g4dn.xlarge
    assert (
        q is not None
        and q.label == "aws/g4dn.xlarge"
        and q.usd_per_hour == INSTANCES["aws/g4dn.xlarge"].price_per_hour
    )
    assert PRICES_TAKEN in q.source
    assert resolve_price() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"price_per_hour": 1.0, "instance": "g5.xlarge"}, "not both"),
        ({"price_per_hour": -1.0}, "positive"),
        ({"instance": "p9.mega"}, r"not in the price table; known: .*aws/c7i.xlarge"),
    ],
)
def test_resolve_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        resolve_price(**kwargs)


def test_user_file_overrides_and_adds(tmp_path: Path) -> None:
    f = tmp_path / "prices.toml"
    f.write_text(
        'taken = "2026-11-01"\n'
        '[instances."aws/g5.xlarge"]\nprice_per_hour = 0.7\n'
        '[instances."onprem-box"]\nprice_per_hour = 0.05\nhardware = "old Xeon"\n'
    )
    table = load_prices(f)
    assert table["aws/g5.xlarge"].price_per_hour == 0.7 and table["aws/g5.xlarge"].taken == "2026-11-01"
    assert table["onprem-box"].hardware == "old Xeon"
    assert table["aws/c7i.large"] == INSTANCES["aws/c7i.large"]  # the rest is kept
    p = resolve_price(instance="onprem-box", prices_file=f)
    assert p is not None and p.usd_per_hour == 0.05 and "2026-11-01" in p.source

    j = tmp_path / "prices.json"
    j.write_text('{"instances": {"x": {"price_per_hour": 2}}}')
    assert load_prices(j)["x"].price_per_hour == 2.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not = [toml", "not a readable price file"),
        ("x = 1\n", "expected an 'instances' table"),
        ('[instances.a]\nprice_per_hour = "cheap"\n', "instance 'a' needs a positive number"),
        ("[instances.a]\nprice_per_hour = 0\n", "instance 'a' needs a positive number"),
    ],
)
def test_bad_price_files(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "p.toml"
    f.write_text(content)
    with pytest.raises(InputError, match=message):
        load_prices(f)
    with pytest.raises(InputError, match="no such price file"):
        load_prices(tmp_path / "missing.toml")

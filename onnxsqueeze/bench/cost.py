"""Cost per inference from an hourly instance price.

    USD per million inferences = price_per_hour / (throughput_per_s * 3600) * 1e6

The throughput is the measured single-stream figure (items per second with one request in flight),
so the cost assumes the instance serves requests back to back at that rate; batching or several
concurrent streams on a larger machine change it, and the report says which was measured.

The built-in table holds on-demand Linux list prices of a few common CPU and GPU instances, with
the date they were taken (``PRICES_TAKEN``). Prices change: check them, or give ``--price-per-hour``
or a price file (TOML or JSON) whose entries add to or replace the built-in ones::

    taken = "2026-11-01"            # optional: when you took these prices
    [instances."my-t4-box"]
    price_per_hour = 0.41
    hardware = "1x T4, 4 vCPU"      # optional
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxsqueeze.errors import InputError, one_line

PRICES_TAKEN = "2025-01"
"""When the built-in prices were taken from the providers' public on-demand price lists."""


@dataclasses.dataclass(frozen=True)
class Instance:
    """One priced machine type."""

    name: str
    price_per_hour: float
    hardware: str = ""
    region: str = ""
    taken: str = PRICES_TAKEN


def _builtin() -> dict[str, Instance]:
    rows = [
        # name, USD/h on demand (Linux), hardware, region
        ("aws/c7i.large", 0.08925, "2 vCPU Intel Sapphire Rapids, 4 GiB", "us-east-1"),
        ("aws/c7i.xlarge", 0.1785, "4 vCPU Intel Sapphire Rapids, 8 GiB", "us-east-1"),
        ("aws/c7i.2xlarge", 0.357, "8 vCPU Intel Sapphire Rapids, 16 GiB", "us-east-1"),
        ("aws/c7g.xlarge", 0.145, "4 vCPU Graviton3 (arm64), 8 GiB", "us-east-1"),
        ("aws/m7i.xlarge", 0.2016, "4 vCPU Intel Sapphire Rapids, 16 GiB", "us-east-1"),
        ("aws/g4dn.xlarge", 0.526, "1x NVIDIA T4 16 GB, 4 vCPU", "us-east-1"),
        ("aws/g5.xlarge", 1.006, "1x NVIDIA A10G 24 GB, 4 vCPU", "us-east-1"),
        ("aws/g6.xlarge", 0.8048, "1x NVIDIA L4 24 GB, 4 vCPU", "us-east-1"),
        ("gcp/n2-standard-4", 0.194236, "4 vCPU Intel, 16 GiB", "us-central1"),
        ("gcp/g2-standard-4", 0.70683, "1x NVIDIA L4 24 GB, 4 vCPU", "us-central1"),
        ("azure/Standard_D4s_v5", 0.192, "4 vCPU Intel, 16 GiB", "eastus"),
        ("azure/Standard_NC4as_T4_v3", 0.526, "1x NVIDIA T4 16 GB, 4 vCPU", "eastus"),
    ]
    return {name: Instance(name, price, hw, region) for name, price, hw, region in rows}


INSTANCES: Mapping[str, Instance] = _builtin()


@dataclasses.dataclass(frozen=True)
class Price:
    """The hourly price a benchmark's cost figures are computed from."""

    usd_per_hour: float
    label: str  # "aws/c7i.xlarge" or "--price-per-hour"
    source: str  # where the figure came from, for the report's footnote

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def usd_per_million(price_per_hour: float, throughput_per_s: float) -> float:
    """Dollars per million inferences at ``throughput_per_s`` items per second."""
    if throughput_per_s <= 0:
        raise ValueError(f"throughput must be positive, got {throughput_per_s}")
    return price_per_hour / (throughput_per_s * 3600.0) * 1e6


def load_prices(path: str | Path | None = None) -> dict[str, Instance]:
    """The built-in table, updated with a user price file (TOML or JSON) when given.

    Raises:
        InputError: the file is missing, unreadable or an entry has no positive ``price_per_hour``.
    """
    table = dict(INSTANCES)
    if path is None:
        return table
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such price file")
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise InputError(f"{path}: not a readable price file ({one_line(e)})") from e
    entries = doc.get("instances")
    if not isinstance(entries, dict) or not entries:
        raise InputError(f"{path}: expected an 'instances' table of NAME = {{price_per_hour = USD}}")
    taken = str(doc.get("taken", f"user file {path.name}"))
    for name, entry in entries.items():
        price = entry.get("price_per_hour") if isinstance(entry, dict) else None
        if not isinstance(price, int | float) or isinstance(price, bool) or price <= 0:
            raise InputError(f"{path}: instance '{name}' needs a positive number price_per_hour")
        table[name] = Instance(
            name, float(price), str(entry.get("hardware", "")), str(entry.get("region", "")), taken
        )
    return table


def find_instance(name: str, table: Mapping[str, Instance]) -> Instance:
    """An instance by full name (``aws/g5.xlarge``) or unambiguous short name (``g5.xlarge``)."""
    if name in table:
        return table[name]
    matches = [inst for key, inst in table.items() if key.split("/", 1)[-1].lower() == name.lower()]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(sorted(table))
    if matches:
        raise InputError(f"--instance '{name}' is ambiguous: {', '.join(m.name for m in matches)}")
    raise InputError(f"--instance '{name}' is not in the price table; known: {known} (or use --prices FILE)")


def resolve_price(
    *,
    price_per_hour: float | None = None,
    instance: str | None = None,
    prices_file: str | Path | None = None,
) -> Price | None:
    """The price to cost a benchmark with: an explicit hourly price, or an instance from the table."""
    if price_per_hour is not None and instance is not None:
        raise InputError("give either --price-per-hour or --instance, not both")
    if price_per_hour is not None:
        if price_per_hour <= 0:
            raise InputError(f"--price-per-hour must be positive, got {price_per_hour:g}")
        return Price(float(price_per_hour), "--price-per-hour", f"${price_per_hour:g}/h given by the user")
    if instance is None:
        if prices_file is not None:
            load_prices(prices_file)  # still validate the file the user pointed at
        return None
    inst = find_instance(instance, load_prices(prices_file))
    where = f", {inst.region}" if inst.region else ""
    source = f"{inst.name} on-demand ${inst.price_per_hour:g}/h{where}, price taken {inst.taken}"
    return Price(inst.price_per_hour, inst.name, source)

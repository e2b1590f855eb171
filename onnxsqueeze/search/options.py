"""What ``squeeze`` optimizes and how: :class:`SqueezeOptions`, the default priced instance, and
the knobs a search with those options offers (:func:`offered_knobs`)."""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from onnxsqueeze.errors import InputError
from onnxsqueeze.evaluate import Budget, Dataset
from onnxsqueeze.search.algorithm import parse_objectives
from onnxsqueeze.search.knobs import Knob, aligned, available_knobs

if TYPE_CHECKING:
    import onnx

# The instance a cost is priced on when none is given (onnxsqueeze.bench.cost's table): a 2-vCPU
# CPU machine, a T4 for CUDA. At a fixed price the cost objective ranks candidates like latency;
# it is reported in dollars per million inferences at batch 1.
DEFAULT_INSTANCE = {"cpu": "aws/c7i.large", "cuda": "aws/g4dn.xlarge", "tensorrt": "aws/g4dn.xlarge"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SqueezeOptions:
    """What ``squeeze`` optimizes and how.

    Attributes:
        budget: the accuracy budget.
        objective: latency, size, macs or cost, or a comma-separated priority list
            (``"latency,size"``): ties on the first (within the timing noise for latency and
            cost) are broken by the next.
        provider: execution provider for evaluation and latency.
        time_budget_s: stop starting new evaluations after this many seconds.
        techniques: restrict to these knob names (None: all offered).
        price_per_hour: for the cost objective; or ``instance``, a name in
            ``onnxsqueeze.bench.cost``'s table (default by provider, see ``DEFAULT_INSTANCE``).
        latency_seconds: minimum timing-loop duration per candidate.
        latency_threads: intra-op threads of the timed sessions (1: see :func:`compare_latency`;
            None: onnxruntime's default pool).
        batch_size: evaluation batch size.
        distill_time_s: training-time budget of each distilled student.
        train_epochs: train each distilled student and fine-tuned base this many epochs
            (early stopping aside) instead of the time budgets: reproducible byte for byte,
            whatever process trains it (``--workers``, Ray).
        distill_students: the catalog students the ``distill`` knob tries, larger to smaller
            (None: the knob's own list).
        finetune_time_s: training-time budget of each fine-tuned base (the ``+ft`` knobs).
    """

    budget: Budget
    objective: str = "latency"
    provider: str = "cpu"
    time_budget_s: float | None = None
    techniques: tuple[str, ...] | None = None
    price_per_hour: float | None = None
    instance: str | None = None
    latency_seconds: float = 0.5
    latency_threads: int | None = 1
    batch_size: int = 64
    distill_time_s: float = 60.0
    train_epochs: int | None = None
    distill_students: tuple[str, ...] | None = None
    finetune_time_s: float = 30.0


# int4 (MatMulNBits) is offered only when MatMul weights hold at least this share of the weights.
INT4_MIN_SHARE = 0.1


@functools.cache
def cpu_int8_dot() -> str | None:
    """The CPU's int8 dot-product extension as onnxruntime's MLAS dispatches on it (``avx512_vnni``,
    ``avx_vnni``; ``none`` on an x86 CPU with neither), None when it cannot be told.

    MLAS reads CPUID leaf 7 (AVX512_VNNI: ECX bit 11; AVX-VNNI: sub-leaf 1, EAX bit 4) and the
    OS's XSAVE state; Linux's ``/proc/cpuinfo`` flags are the kernel's reading of the same bits,
    cleared when the OS does not enable the state.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None
    )
    if flags is None:  # not x86 (ARM lists "Features")
        return None
    return next((f for f in ("avx512_vnni", "avx_vnni") if f in flags), "none")


def weight_share(model: onnx.ModelProto, op_types: tuple[str, ...]) -> float:
    """The fraction of the weights of ``model``'s Conv/Gemm/MatMul layers held by ``op_types``
    (weights in initializers or Constant nodes, as exporters such as paddle2onnx write them)."""
    import math

    sizes = {t.name: math.prod(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            sizes[node.output[0]] = math.prod(node.attribute[0].t.dims)
    share = total = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(node.input) > 1:
            n = sizes.get(node.input[1], 0)
            total += n
            share += n if node.op_type in op_types else 0
    return share / total if total else 0.0


def conv_share(model: onnx.ModelProto) -> float:
    """The fraction of the weights of ``model``'s Conv/Gemm/MatMul layers that are Conv weights."""
    return weight_share(model, ("Conv", "ConvTranspose"))


def conv_mac_share(model: onnx.ModelProto) -> float:
    """The fraction of ``model``'s MACs (batch 1, dynamic dimensions at their defaults) done by
    convolutions; the weight share (:func:`conv_share`) when the MACs cannot be counted.

    What the time goes to: MobileNetV3-small holds 36% of its weights in convolutions (its
    classifier's Gemms hold the rest) but does 97% of its MACs there.
    """
    from onnxsqueeze.summary import count_macs

    try:
        total, per_node = count_macs(model)
    except Exception:  # shapes that cannot be resolved: the weights tell what they can
        return conv_share(model)
    if not total:
        return conv_share(model)
    kinds = {n.name or f"{n.op_type}#{i}": n.op_type for i, n in enumerate(model.graph.node)}
    conv = sum(m for k, m in per_node.items() if kinds.get(k) in ("Conv", "ConvTranspose"))
    return conv / total


def _dynamic_int8_slow(model: onnx.ModelProto | None, options: SqueezeOptions) -> str | None:
    """Why dynamic int8 cannot lower latency here (None: it may).

    onnxruntime runs a dynamically quantized Conv as DynamicQuantizeLinear + ConvInteger (im2col
    and an integer GEMM, then a float rescale): measured 10x *slower* than float at batch 1 on
    the digits CNN (and on the paddle orientation classifier) on this project's CPU, which has
    AVX512-VNNI; on a CPU without VNNI the integer GEMM has no fast dot product at all.
    """
    if options.provider != "cpu":
        return None
    dot = cpu_int8_dot()
    if dot == "none":
        return "this CPU has no VNNI (AVX512-VNNI, AVX-VNNI): onnxruntime's integer GEMM is slower than float"
    if model is not None and conv_mac_share(model) > 0.5:
        # By MACs, not weights: a 10x slower ConvInteger dominates however many weights a
        # classifier head holds (MobileNetV3-small, 36% of its weights in Conv: 10.6x slower).
        return (
            "mostly Conv MACs: onnxruntime runs them as ConvInteger, measured 10x slower than float "
            f"at batch 1 (CPU int8 dot product: {dot or 'unknown'})"
        )
    return None


def offered_knobs(
    knobs: Sequence[Knob],
    options: SqueezeOptions,
    *,
    train: Dataset | None,
    calibration: Dataset | None,
    model: onnx.ModelProto | None = None,
) -> tuple[list[Knob], dict[str, str]]:
    """The knobs (and settings) a search with ``options`` offers, and why the others are not.

    A knob is offered when its passes are registered (:func:`available_knobs`), its data are
    given (training data for the knobs that train, calibration data for calibrated settings),
    and it is named in ``options.techniques`` or, when none are named, can lower the objective
    (or keeps it and lowers the file size, :attr:`Knob.keeps`: the size breaks the ties).
    Dynamic int8 counts as lowering latency and cost only where onnxruntime has a fast path for
    ``model`` on this CPU (:func:`_dynamic_int8_slow`); it still lowers the file size.

    Raises:
        InputError: ``options.techniques`` names an unknown knob.
    """
    offered, skipped = available_knobs(knobs)
    for k in [k for k in offered if k.base]:
        if train is None:
            skipped[k.name] = "no training data (--train-data)"
            offered.remove(k)
        elif options.distill_students and k.name == "distill":
            offered[offered.index(k)] = dataclasses.replace(k, settings=tuple(options.distill_students))
    if options.techniques is not None:
        known = {k.name for k in knobs}
        unknown = sorted(set(options.techniques) - known)
        if unknown:
            raise InputError(f"unknown technique(s) {unknown}; known: {', '.join(sorted(known))}")
        for k in offered:
            if k.name not in options.techniques:
                skipped[k.name] = "not requested (--techniques)"
        offered = [k for k in offered if k.name in options.techniques]
    else:
        wanted = set(parse_objectives(options.objective))
        for k in [k for k in offered if k.named_only and wanted & set(k.improves)]:
            skipped[k.name] = k.named_only
            offered.remove(k)
        slow = _dynamic_int8_slow(model, options) if wanted & {"latency", "cost"} else None
        matmul = weight_share(model, ("MatMul",)) if model is not None else 1.0
        if matmul < INT4_MIN_SHARE and any(k.name == "int4" for k in offered):
            # 4-bit MatMulNBits rewrites MatMul weights only: on a Conv model it moves nothing.
            skipped["int4"] = (
                f"its MatMul weights are {matmul:.1%} of the weights; name it in --techniques to try it anyway"
            )
            offered = [k for k in offered if k.name != "int4"]
        for k in [k for k in offered if k.name == "int8-dynamic" and slow]:
            if not wanted & (set(k.improves) - {"latency", "cost"}):
                skipped[k.name] = (
                    f"cannot lower {options.objective} ({slow}; name it in --techniques to try it anyway)"
                )
                offered.remove(k)
        # A knob that keeps an objective and lowers the size wins that objective's ties (the
        # search ranks by the file size last).
        for k in [k for k in offered if not wanted & (set(k.improves) | set(k.keeps))]:
            skipped[k.name] = (
                f"cannot lower {options.objective} "
                f"({'no measured objective' if not k.improves else ', '.join(k.improves) + ' only'}; "
                "name it in --techniques to try it anyway)"
            )
            offered.remove(k)
    if parse_objectives(options.objective)[0] in ("latency", "cost"):
        # Channel counts the fast kernels take (knobs.CHANNEL_ALIGN); a size search keeps any count.
        offered = [aligned(k) if k.name == "channels" else k for k in offered]
    if calibration is None:
        for k in list(offered):
            keep = tuple(s for s in k.settings if not k.step_of(s).calibration)
            if len(keep) < len(k.settings):
                skipped[f"{k.name} (calibrated settings)"] = "no calibration data"
            offered.remove(k)
            if keep:
                offered.append(dataclasses.replace(k, settings=keep))
        offered.sort(key=lambda k: [x.name for x in knobs].index(k.name))
    return offered, skipped

"""The knobs: the techniques the search can turn, and the steps each setting stands for.

The table :data:`KNOBS` is the one place that maps techniques to passes. A knob whose pass is not
registered in :data:`onnxsqueeze.passes.PASSES` (or whose options the pass does not take) is not
offered (:func:`available_knobs`); the report says so. A monotone knob (more aggressive never helps
accuracy: sparsity level, channel ratio, resolution, the int8 layers kept in float) has
its settings ordered from mildest to most aggressive, so the search may bisect it.

**Distillation** (the ``distill`` knob, offered only with training data) is a *base* knob: a
setting names a catalog student (``models/students.py``) that replaces the model the other knobs'
passes run on, so ``distill -> cnn4 + int8 static`` is int8 of the student
(:class:`onnxsqueeze.search.students.Students` trains and caches it).

**Fine-tuned variants** (``sparsity+ft``, ``channels+ft``, ``resolution+ft``, also offered only with
training data) are base knobs too: the setting's pass runs on the original and the result is
fine-tuned against the original on the training data (:func:`onnxsqueeze.finetune.finetune`:
zeros and removed channels stay removed); that model is the candidate's base, so it is trained
once, cached and stored beside the recipe like a student. The ``+ft`` knobs share the group
``ft`` (one fine-tuned pass per candidate); combined with ``distill`` the pass runs on the
student instead, which is then fine-tuned against the *original* (``distill -> cnn4 + channels
-50% +ft``): a candidate still has one base model, the fine-tuned student.
"""

# NOTE: this module imports nothing from the rest of search/; passes are looked up in the registry.

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from onnxsqueeze.evaluate import Dataset, Evaluator
from onnxsqueeze.recipe import Step

# ------------------------------------------------------------------------------------ the knobs

# Offered for a size search only by name. One-shot: its re-fitted candidates took 48 of the 109 s
# of the orientation classifier's size search (4 of 14 points; the best, int8 dynamic, unchanged)
# and 5-14 of the digits CNN's 16-26 CPU s (best unchanged): zeros pay in the file only at high
# sparsity, which the one-shot pass rarely keeps within budget. Fine-tuned: each setting trains a
# base, and on the digits student sparsity 80 % +ft lost to channels -40 % +ft once both had int8
# weights (5,155 vs 4,332 B). Measured on branch sparse15.
SPARSITY_NAMED_ONLY = (
    "sparse weights are stored smaller, but only high sparsity pays and each setting is a re-fit "
    "(a training with +ft); name it in --techniques to try it"
)


@dataclasses.dataclass(frozen=True)
class Knob:
    """A technique the search can turn.

    Attributes:
        name: the knob's name in reports and ``--techniques``.
        settings: candidate settings; for a monotone knob ordered from mildest to most
            aggressive.
        monotone: more aggressive settings never raise the metric (bisection is valid).
        step: the recipe step (registry pass name, options) of a setting.
        stage: order of application in a combination (structure first, precision last).
        group: knobs of one group exclude each other in a combination (fp16 vs int8).
        label: how a setting reads in reports (default ``"<name> <setting>"``).
        plan: model- and data-dependent preparation, computed once per search (and cached):
            ``plan(context) -> value``; a knob with a plan has ``step(setting, value)``, and
            ``value`` is None when the plan could not be made.
        improves: the objectives a setting can lower as measured here (serialized bytes, MACs
            counted densely, onnxruntime latency); unless named in ``--techniques``, a knob is
            not offered when it can lower none of the requested objectives (evaluations for
            nothing: zeroed weights are stored and multiplied densely).
        keeps: objectives a setting leaves where they were (within the timing noise) while it
            lowers the file size: the knob is offered for them too, since the search breaks their
            ties by the file size (a latency search keeps int8 weights folded at load on top of
            its fastest point, for the same speed in a quarter of the bytes).
        named_only: why the knob is offered only when named in ``--techniques`` although it can
            lower a requested objective (empty: offered whenever it can).
        late: the greedy combination adds it after the other passes, whatever its efficiency
            alone: zeros pay in the file only at high sparsity, where a structural knob removes
            the same bytes outright and the MACs too (sparsity 80 % costs the digits CNN nothing
            alone; taken first, it left channel pruning -10 %).
        base: the setting replaces the model the passes run on (distillation into a student)
            instead of adding a pass; its ``step`` only names it (cache keys, reports) and the
            recipe records the new model as its base (:class:`onnxsqueeze.recipe.BaseModel`).
    """

    name: str
    settings: tuple[Any, ...]
    monotone: bool
    step: Callable[..., Step]
    stage: int
    group: str | None = None
    label: Callable[[Any], str] | None = None
    help: str = ""
    improves: tuple[str, ...] = ("latency", "size", "macs", "cost")
    keeps: tuple[str, ...] = ()
    plan: Callable[[PlanContext], Any] | None = None
    base: bool = False
    named_only: str = ""  # when set: offered only when named in --techniques, and why
    late: bool = False  # combined after the other passes (see below)
    first: Any = None  # a monotone knob's setting its bisection probes first (from its plan)

    def describe(self, setting: Any) -> str:
        return self.label(setting) if self.label is not None else f"{self.name} {setting}"

    def step_of(self, setting: Any) -> Step:
        """The step of a setting (a planned knob not yet bound gets its plan-less step)."""
        return self.step(setting, None) if self.plan is not None else self.step(setting)

    def bind(self, value: Any) -> Knob:
        """This knob with its plan's value fixed in its steps.

        Settings that the plan makes identical to a later one are dropped (the later one is kept,
        so a monotone order stays mildest first): a small model has fewer int8 layers to keep
        float than the largest setting asks for. A plan's ``"first"`` entry, when one of the
        kept settings, is the setting a bisection probes first (else the knob's own ``first``).
        """
        unbound = self.step
        steps = [unbound(s, value) for s in self.settings]
        kept = tuple(s for i, s in enumerate(self.settings) if steps[i] not in steps[i + 1 :])
        first = value.get("first") if isinstance(value, Mapping) else None
        return dataclasses.replace(
            self,
            settings=kept,
            step=lambda s: unbound(s, value),
            plan=None,
            first=first if first in kept else self.first if self.first in kept else None,
        )


@dataclasses.dataclass(frozen=True)
class PlanContext:
    """What a knob's plan may look at: the original model and the search's data."""

    model: onnx.ModelProto
    evaluator: Evaluator
    calibration: Dataset | None
    input_shapes: Mapping[str, Sequence[int]] | None = None  # of the model's dynamic inputs
    # The model as every candidate's passes receive it (cleanup, onnxslim): what a plan that
    # names nodes for a pass should measure (None: ``model``).
    normalized: onnx.ModelProto | None = None


def _channels_plan(
    ctx: PlanContext, *, ratio: float = 0.75, samples: int = 32, max_groups: int = 8
) -> dict[str, float]:
    """Per-group sensitivity: the metric drop when each prunable group alone loses ``ratio``.

    Uses :func:`onnxsqueeze.prune.sensitivity` (the pruning issue's analysis) on ``samples``
    evaluation samples (seeded) for the ``max_groups`` widest groups, without reconstruction: a
    ranking, computed once per search, so it must cost a few evaluations, not one per group with
    a least-squares refit each (that took 5 s of CPU per group on the 16 groups of a 154 MMAC
    classifier, longer than the search). Groups left out keep the uniform ratio.
    """
    import onnx_ir as ir

    from onnxsqueeze.passes.channels import analyze
    from onnxsqueeze.prune import sensitivity  # type: ignore[import-not-found, unused-ignore]

    ds = ctx.evaluator.dataset
    pick = np.sort(np.random.default_rng(0).permutation(len(ds))[: min(samples, len(ds))])
    data = {k: np.asarray(v)[pick] for k, v in ds.inputs.items()}
    if ds.labels is not None and ctx.evaluator.metric.name == "accuracy":
        data["labels"] = np.asarray(ds.labels)[pick]
    groups = [g for g in analyze(ir.serde.deserialize_model(ctx.model)) if g.blocked is None]
    widest = sorted(groups, key=lambda g: -g.channels)[:max_groups]
    rows = sensitivity(
        ctx.model,
        data,
        ratios=(ratio,),
        reconstruction="none",
        groups=[g.name for g in widest],
        input_shapes=ctx.input_shapes or None,
    )
    return {
        str(r["group"]): max(float(r["drop"]), 0.0)
        for r in rows
        if r.get("drop") is not None and r.get("ratio") == ratio
    }


def allocate_ratios(drops: Mapping[str, float], target: float, *, cap: float = 0.9) -> dict[str, float]:
    """Per-group channel ratios around ``target``, larger for groups whose drop is smaller.

    With ``d_g`` the drop of group ``g`` pruned alone (from :func:`_channels_plan`), the weight
    ``w_g = (d_g + eps)^(-1/2)`` (``eps = 0.1 + 0.1 mean(d)`` points keeps insensitive groups
    from taking everything) gives ``r_g = min(cap, target * w_g / mean(w))``: the mean ratio is
    ``target`` until the cap binds, and every ``r_g`` grows with ``target`` (bisection stays valid).
    """
    if not drops:
        return {}
    values = list(drops.values())
    eps = 0.1 + 0.1 * float(np.mean(values))
    weights = {g: (d + eps) ** -0.5 for g, d in drops.items()}
    mean_w = float(np.mean(list(weights.values())))
    return {g: round(min(cap, target * w / mean_w), 3) for g, w in sorted(weights.items())}


def _channels_step(ratio: float, drops: Mapping[str, float] | None) -> Step:
    options: dict[str, Any] = {"ratio": ratio}
    if drops:
        options["ratios"] = allocate_ratios(drops, ratio)
    return Step.of("channels", options, calibration=True)


# Kept channel counts for a latency search: multiples of 8, the channel block of onnxruntime's
# NCHWc convolution kernels (MLAS; 8 floats on AVX2, 16 on AVX-512). Off the block, a pruned
# model falls back to slower kernels: the paddle orientation classifier with 20% of its channels
# removed ran 2.62x slower than the original at batch 1, and 0.81x with counts rounded to 8.
CHANNEL_ALIGN = 8


def aligned(knob: Knob, round_to: int = CHANNEL_ALIGN) -> Knob:
    """``knob`` (the channels knob) with kept channel counts rounded up to ``round_to``."""
    inner = knob.step

    def step(setting: Any, *plan: Any) -> Step:
        s = inner(setting, *plan)
        return Step.of(s.pass_name, {**dict(s.options), "round_to": round_to}, calibration=s.calibration)

    return dataclasses.replace(knob, step=step)


def _int8_plan(ctx: PlanContext, *, samples: int = 128) -> dict[str, Any] | None:
    """Calibration choice and layer order for static int8 (:func:`onnxsqueeze.optimize.int8_plan.plan_int8`).

    Measured on the normalized model, the graph the int8 step quantizes (batch norms folded: a
    raw export's unfused BatchNormalization would be quantized apart and scored slower), scored
    on up to ``samples`` evaluation samples; needs calibration data.
    """
    import copy

    from onnxsqueeze.optimize.int8_plan import plan_int8

    if ctx.calibration is None:
        return None
    sub = copy.copy(ctx.evaluator)
    sub.dataset = ctx.evaluator.dataset.take(0, min(samples, len(ctx.evaluator.dataset)))
    sub._reference_out = None
    sign = 1.0 if sub.metric.higher_is_better else -1.0
    model = ctx.normalized if ctx.normalized is not None else ctx.model
    plan = plan_int8(model, lambda m: sign * sub.score(m), ctx.calibration.inputs)
    if plan["ranking"] == "estimate":  # all-int8 lost nothing on these samples: probe it first
        plan["first"] = 0
    return plan


def _int8_step(float_layers: int, plan: Mapping[str, Any] | None) -> Step:
    options: dict[str, Any] = {"mode": "static", "per_channel": True}
    if plan:
        options["calibrate_method"] = plan["calibrate_method"]
        options["activation_type"] = plan["activation_type"]
        # At least one layer stays int8 (all float is the original, not a candidate).
        keep_float = min(float_layers, len(plan["order"]) - 1)
        if keep_float > 0:
            options["exclude"] = tuple(plan["order"][:keep_float])
    return Step.of("int8", options, calibration=True)


# NOTE for the lead: when a technique lands, check that its registry name and option names match
# the step below (the search checks the options against the pass's dataclass fields and reports
# a mismatch as "not offered").
KNOBS: tuple[Knob, ...] = (
    Knob(
        "resolution",
        settings=(0.875, 0.75, 0.625, 0.5),
        monotone=True,
        step=lambda s: Step.of("resolution", {"scale": s, "keep_interface": True}),
        stage=0,
        label=lambda s: f"resolution x{s:g}",
        help="input resolution scale (RewriteInputResolutionPass)",
        # The interface is kept (a Resize in front) and no weight changes: the file never
        # shrinks, so a size search does not spend its budget on it unless it is named.
        improves=("latency", "macs", "cost"),
    ),
    Knob(
        "channels",
        settings=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
        monotone=True,
        # Per-group ratios from the pruning sensitivity analysis (the plan), least-squares
        # reconstruction on the calibration data; uniform ratios if the analysis cannot run.
        step=_channels_step,
        plan=_channels_plan,
        stage=1,
        label=lambda r: f"channels -{r:.0%}",
        help="structured channel pruning ratio (PruneChannelsPass)",
        # Probed first, then its neighbour -50 % (algorithm.search): each channels probe is a full
        # build with least-squares re-fit (~34 CPU s on the orientation classifier), and past
        # -40 % the per-group plan overshoots on the corpus classifiers (orientation: -50 % loses
        # 31 points, -60 % 96); the midpoint after a fit (-60 %) was a build that missed.
        first=0.4,
    ),
    Knob(
        "sparsity",
        settings=(0.3, 0.5, 0.6, 0.7, 0.8, 0.9),
        monotone=True,
        # With least-squares reconstruction on the calibration data (the pass's default).
        step=lambda s: Step.of("sparsity", {"sparsity": s}, calibration=True),
        stage=2,
        label=lambda s: f"sparsity {s:.0%}",
        help="zero-weight magnitude pruning (PruneWeightsPass)",
        # The written file stores a weight sparse where that is smaller (squeezer.written_form:
        # int8 values and varint indices pay below ~50% nonzeros): the size moves. onnxruntime
        # densifies at load: the latency, MACs and the cost (priced on latency) do not.
        improves=("size",),
        named_only=SPARSITY_NAMED_ONLY,
        late=True,
    ),
    Knob(
        "int8",
        # Static int8 with accuracy-aware reversion: the plan picks the calibration (method and
        # activation type) that scores best and ranks layers by the metric recovered when each
        # alone is reverted to float (NNCF's measured sensitivity); a setting keeps the k most
        # sensitive layers float. Fewer float layers, more noise: monotone, mildest first.
        settings=(8, 4, 2, 1, 0),
        monotone=True,
        step=_int8_step,
        plan=_int8_plan,
        stage=3,
        group="precision",
        label=lambda k: "int8 static" if k == 0 else f"int8 static, {k} most sensitive layers float",
        help="int8 QDQ with calibration, sensitive layers reverted to float (QuantizeInt8Pass)",
        improves=("latency", "size", "cost"),
    ),
    Knob(
        "int8-dynamic",
        settings=(True,),
        monotone=False,
        step=lambda _: Step.of("int8", {"mode": "dynamic", "per_channel": True}),
        stage=3,
        group="precision",
        label=lambda _: "int8 dynamic",
        improves=("latency", "size", "cost"),
        help="int8 weights, activations quantized at run time (QuantizeInt8Pass)",
    ),
    Knob(
        "int8-weights",
        settings=(True,),
        monotone=False,
        # Per-channel where the opset allows (>= 13), per-tensor below: float compute, 4x smaller
        # weights. Rebuilt as Mul(Cast(q), s), which the session folds to float weights at load:
        # behind DequantizeLinear (never folded by default) each run dequantized again and Conv lost
        # its pre-packed kernels (paddle orientation classifier: 3.9x the float latency, 0.86-0.99x
        # with the Cast form; a size search chose it and was slower than every peer's int8).
        step=lambda _: Step.of("int8-weights", {"form": "cast"}),
        stage=3,
        group="precision",
        label=lambda _: "int8 weights only",
        # The compute stays float: the file shrinks, the latency stays (measured 0.86-0.99x).
        improves=("size",),
        keeps=("latency", "cost"),
        help="int8 weights rebuilt by Cast and Mul, folded at load: float compute (QuantizeWeightsInt8Pass)",
    ),
    Knob(
        "int4",
        settings=(True,),
        monotone=False,
        step=lambda _: Step.of("int4", {"block_size": 32}),
        stage=3,
        group="precision",
        label=lambda _: "int4 MatMul weights",
        improves=("latency", "size", "cost"),
        help="4-bit MatMul weights, onnxruntime MatMulNBits (QuantizeMatMulInt4Pass)",
    ),
    Knob(
        "fp16",
        settings=(True,),
        monotone=False,
        step=lambda _: Step.of("fp16", {}),
        stage=3,
        group="precision",
        label=lambda _: "fp16",
        improves=("latency", "size", "cost"),
        help="half precision (ConvertToFloat16Pass)",
    ),
    Knob(
        "distill",
        # Catalog students (models/students.py), larger to smaller: a smaller student learns less
        # (roughly monotone, as the int8 fraction). Offered only with training data.
        settings=("cnn8", "cnn4"),
        monotone=True,
        step=lambda s: Step.of("distill", {"student": s}),
        stage=-2,
        base=True,
        group="base",
        label=lambda s: f"distill -> {s}",
        help="knowledge distillation into a smaller catalog student (needs --train-data)",
    ),
)


def _fine_tuned(inner: Knob, named_only: str = "") -> Knob:
    """``<inner>+ft``: ``inner``'s setting on the original, then recovery fine-tuning (a base knob).

    A planned inner knob (channels) uses its plan-less step (uniform ratios): the plan is a
    one-shot sensitivity ranking, and the fine-tuned model must not depend on a search's plan.
    It lowers what ``inner`` lowers (``resolution+ft``, like ``resolution``, never the file's bytes).
    """
    return Knob(
        f"{inner.name}+ft",
        settings=inner.settings,
        monotone=inner.monotone,
        step=lambda s: Step.of("finetune", {"knob": inner.name, "setting": s}),
        stage=-1,
        base=True,
        group="ft",
        label=lambda s: f"{inner.describe(s)} +ft",
        help=f"{inner.name}, then recovery fine-tuning against the original (needs --train-data)",
        improves=inner.improves,
        named_only=named_only,
    )


KNOBS = KNOBS + tuple(
    _fine_tuned(k, SPARSITY_NAMED_ONLY if k.name == "sparsity" else "")
    for k in KNOBS
    if k.name in ("resolution", "channels", "sparsity")
)
FT_PREFIX = "ft:"
CLEANUP = Step.of("cleanup", {})


def base_spec(step: Step) -> str:
    """The name of a base model in caches, reports and recipes: a student spec (``cnn4``),
    ``ft:<knob>:<setting>`` for a fine-tuned pass output of the original, or
    ``ft:<knob>:<setting>@<student>`` for one of a distilled student."""
    options = dict(step.options)
    if step.pass_name == "finetune":
        on = f"@{options['student']}" if options.get("student") else ""
        return f"{FT_PREFIX}{options['knob']}:{options['setting']!r}{on}"
    return str(options["student"])


def ft_student(spec: str) -> str | None:
    """The student a fine-tuned base ``spec`` starts from (``ft:...@cnn4`` -> ``cnn4``), None
    for the original (or when ``spec`` is not a fine-tuned base)."""
    if not spec.startswith(FT_PREFIX) or "@" not in spec:
        return None
    return spec.rpartition("@")[2]


def base_specs(spec: str) -> list[str]:
    """The trained bases ``spec`` needs, in training order: its student first, then itself."""
    student = ft_student(spec)
    return [student, spec] if student is not None else [spec]


def ft_steps(spec: str) -> list[Step]:
    """The steps whose output the fine-tuned base ``spec`` (``ft:<knob>:<setting>[@<student>]``)
    trains from (run on the original, or on the student)."""
    import ast

    name, _, setting = spec[len(FT_PREFIX) :].partition("@")[0].partition(":")
    inner = next(k for k in KNOBS if k.name == name)
    return [CLEANUP, inner.step_of(ast.literal_eval(setting))]


def available_knobs(knobs: Sequence[Knob] = KNOBS) -> tuple[list[Knob], dict[str, str]]:
    """The knobs (and settings) whose passes are registered, and why the others are not offered."""
    from onnxsqueeze.passes import PASSES

    offered: list[Knob] = []
    skipped: dict[str, str] = {}
    for knob in knobs:
        if knob.base:  # not a pass: offered when its data are (see Squeezer)
            offered.append(knob)
            continue
        ok, why = [], []
        for s in knob.settings:
            step = knob.step_of(s)
            cls = PASSES.get(step.pass_name)
            if cls is None:
                why.append(f"pass '{step.pass_name}' is not registered")
                continue
            fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            missing = sorted({k for k, _ in step.options} - fields)
            if missing or (step.calibration and not fields & {"calibration", "ranges"}):
                why.append(f"pass '{step.pass_name}' takes no option(s) {missing or ['calibration']}")
                continue
            ok.append(s)
        if ok:
            offered.append(dataclasses.replace(knob, settings=tuple(ok)))
        if why:
            skipped[knob.name] = "; ".join(dict.fromkeys(why))
    return offered, skipped


Settings = dict[str, Any]


def steps_of(settings: Mapping[str, Any], knobs: Sequence[Knob]) -> list[Step]:
    """The recipe steps of a candidate: cleanup, then each pass knob's step by stage."""
    by_name = {k.name: k for k in knobs}
    chosen = sorted(settings.items(), key=lambda kv: (by_name[kv[0]].stage, kv[0]))
    return [CLEANUP, *(by_name[name].step_of(value) for name, value in chosen if not by_name[name].base)]


def base_of(settings: Mapping[str, Any], knobs: Sequence[Knob]) -> Step | None:
    """The step naming the candidate's base model, None for the original: a student
    (``distill``), a fine-tuned pass output (a ``+ft`` knob) or, with both, the fine-tuned pass
    output of the student (the ``finetune`` step with the option ``student``)."""
    by_name = {k.name: k for k in knobs}
    bases = [by_name[n].step_of(v) for n, v in sorted(settings.items()) if by_name[n].base]
    tuned = [b for b in bases if b.pass_name == "finetune"]
    students = [b for b in bases if b.pass_name != "finetune"]
    if tuned and students:
        return Step.of("finetune", dict(tuned[0].options) | {"student": dict(students[0].options)["student"]})
    return bases[0] if bases else None


def describe_settings(settings: Mapping[str, Any], knobs: Sequence[Knob]) -> str:
    if not settings:
        return "baseline"
    by_name = {k.name: k for k in knobs}
    parts = sorted(settings.items(), key=lambda kv: (by_name[kv[0]].stage, kv[0]))
    return " + ".join(by_name[n].describe(v) for n, v in parts)

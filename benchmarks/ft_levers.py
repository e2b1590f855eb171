"""What fine-tuning buys on a distilled student: gradual vs one-shot channels, longer training,
and int4 weights with quantization-aware fine-tuning (issue 15's 2x-size question).

    PYTHONPATH=. python benchmarks/ft_levers.py --student OUT/digits_cnn.student.onnx \
        [--teacher .cache/models/digits_cnn.onnx] [--epochs 20] [--ratios 0.2,0.4,0.5,0.6] [--json F]

``--student`` is the cnn4 student a squeeze wrote (``squeeze ... --distill-students cnn4
--train-epochs 20`` writes ``digits_cnn.student.onnx``). Every row starts from that student, prunes
``ratio`` of its channels with the least-squares re-fit (as the ``channels+ft`` knob does), then:

- ``oneshot``: fine-tunes ``--epochs`` epochs (the ``+ft`` knob);
- ``long``: the same, asked for 4x the epochs (the plateau rule may stop it earlier);
- ``gradual``: :func:`onnxsqueeze.finetune.gradual.gradual_channels` in 3 rounds, ``--epochs`` each;
- ``sparse``: the ``oneshot`` model, then ``--sparsities`` of its remaining weights zeroed (the
  ``sparsity`` pass with its least-squares re-fit) and fine-tuned again (zeros kept), then int8
  weights (``Mul(Cast(q), s)``) and sparse storage as ``squeeze`` writes them: sparsity+ft on the
  channels+ft student, which the search does not combine (one ``+ft`` base per candidate);
- ``int4``: weights of Conv/Gemm as int4 (DequantizeLinear, opset 21, symmetric per output
  channel) after the pruning alone, after plain fine-tuning, and after quantization-aware
  fine-tuning (a straight-through fake quant of those weights during training: the forward pass
  sees ``round(w / s) * s`` with ``s = max|w| / 7`` per output channel, the float weights take
  the gradient).

``--rewrite FILE [FILE ...]`` instead measures what the written form would lose with int8 weights
on one scale per tensor instead of per channel, without node names, and with intermediate value
names shortened to hex (the interface kept), each rewrite applied to the file as it is written.

The int4 files are written here (not a pass of the project); sizes are of the written form
(:func:`onnxsqueeze.manifest.deployable`). Accuracy is on the evaluation data (``--val``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper
from onnx import numpy_helper as nh

M = Path(".cache/models")


def accuracy(model: onnx.ModelProto, val: dict[str, np.ndarray]) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: val[i.name] for i in sess.get_inputs()}
    return 100 * float((sess.run(None, feeds)[0].argmax(1) == val["labels"]).mean())


def written_size(model: onnx.ModelProto) -> int:
    from onnxsqueeze.manifest import deployable

    return len(deployable(model).SerializeToString(deterministic=True))


def to_int4(model: onnx.ModelProto, qmax: int = 7) -> onnx.ModelProto:
    """Conv/Gemm weight initializers as int4 + per-output-channel scale through DequantizeLinear."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for o in out.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = max(o.version, 21)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    dq = []
    for node in g.node:
        if node.op_type in ("Conv", "Gemm") and node.input[1] in inits:
            t = inits[node.input[1]]
            w = nh.to_array(t).astype(np.float32)
            s = (np.abs(w).reshape(len(w), -1).max(1) / qmax).astype(np.float32)
            s[s == 0] = 1.0
            q = np.clip(np.round(w / s.reshape((-1,) + (1,) * (w.ndim - 1))), -qmax, qmax).astype(np.int8)
            qt = helper.make_tensor(f"{t.name}_q", onnx.TensorProto.INT4, list(w.shape), q.flatten().tolist())
            g.initializer.remove(t)
            g.initializer.extend([qt, nh.from_array(s, f"{t.name}_s")])
            dq.append(helper.make_node("DequantizeLinear", [qt.name, f"{t.name}_s"], [t.name], axis=0))
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(dq + nodes)
    return out


def _fake_quant(w: Any, qmax: int = 7) -> Any:
    import torch

    s = w.abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True).clamp_min(1e-12) / qmax
    return torch.clamp(torch.round(w / s), -qmax, qmax) * s


def finetuned(
    cand: onnx.ModelProto, teacher: Path, train: dict[str, np.ndarray], epochs: int, qat: bool
) -> Any:
    """``finetune`` on ``cand``; with ``qat`` the Conv/Gemm weights are fake-quantized to int4 in the
    forward pass (straight-through: the float copy is put back before the optimizer step)."""
    import torch

    from onnxsqueeze.finetune import FinetuneConfig, finish, prepare

    session = prepare(cand, teacher, train, config=FinetuneConfig(epochs=epochs, time_budget_s=None, seed=0))
    mods = [m for m in session.graph.module.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    shadow: dict[int, Any] = {}
    if qat:

        def quantize(mod: Any, _args: Any) -> None:
            if id(mod) not in shadow:
                shadow[id(mod)] = mod.weight.data.clone()
            mod.weight.data = _fake_quant(shadow[id(mod)])

        for m in mods:
            m.register_forward_pre_hook(quantize)
        masks = session.graph.mask_gradients

        def restore() -> None:  # after backward, before the step: the float weights take it
            masks()
            for m in mods:
                if id(m) in shadow:
                    m.weight.data = shadow.pop(id(m))

        session.graph.mask_gradients = restore  # type: ignore[method-assign]
    before, zeros = session.score(session.norm), session.graph.zeros()
    summary = session.train()
    if qat:
        for m in mods:
            if id(m) in shadow:
                m.weight.data = shadow.pop(id(m))
            m.weight.data = _fake_quant(m.weight.data)
            m._forward_pre_hooks.clear()
    return finish(session, summary, before, zeros, 1e-4).model


def squeeze_written(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with int8 weights (the search's ``int8-weights`` step) in the form a squeeze writes
    it: sparse storage where smaller (:func:`onnxsqueeze.search.squeezer.written_form`)."""
    from onnxsqueeze.recipe import Step, build
    from onnxsqueeze.search.squeezer import written_form

    return written_form(build(model, [Step.of("int8-weights", {"form": "cast"})]))


def per_tensor_scales(model: onnx.ModelProto) -> onnx.ModelProto:
    """int8 DequantizeLinear weights re-quantized on one symmetric scale per tensor."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    for n in out.graph.node:
        if n.op_type != "DequantizeLinear" or len(n.input) != 2 or n.input[0] not in inits:
            continue
        q, s = inits[n.input[0]], inits[n.input[1]]
        w = nh.to_array(q).astype(np.float32) * nh.to_array(s).reshape((-1,) + (1,) * (len(q.dims) - 1))
        scale = np.float32(np.abs(w).max() / 127)
        q.CopyFrom(nh.from_array(np.clip(np.round(w / scale), -127, 127).astype(np.int8), q.name))
        s.CopyFrom(nh.from_array(np.array(scale, np.float32), s.name))
        del n.attribute[:]
    return out


def without_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for n in out.graph.node:
        n.ClearField("name")
    return out


def short_value_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every value and initializer but the inputs and outputs renamed 0, 1, ... (hex)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    keep = {i.name for i in g.input} | {o.name for o in g.output}
    names: dict[str, str] = {}

    def new(x: str) -> str:
        return x if not x or x in keep else names.setdefault(x, format(len(names), "x"))

    for t in g.initializer:
        t.name = new(t.name)
    for n in g.node:
        n.input[:] = [new(x) for x in n.input]
        n.output[:] = [new(x) for x in n.output]
    return out


def rewrite(files: list[Path], val: dict[str, np.ndarray]) -> None:
    from onnxsqueeze.manifest import deployable

    for f in files:
        m = deployable(onnx.load(f))
        base = written_size(m)
        print(f"{f}: written {base} B, val {accuracy(m, val):.2f}")
        for label, fn in (
            ("per-tensor scales", per_tensor_scales),
            ("no node names", without_node_names),
            ("short value names", short_value_names),
            ("all three", lambda x: short_value_names(without_node_names(per_tensor_scales(x)))),
        ):
            r = fn(m)
            print(
                f"   {label}: {written_size(r)} B ({written_size(r) - base:+d}), val {accuracy(r, val):.2f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", type=Path)
    ap.add_argument("--rewrite", type=Path, nargs="+", metavar="FILE")
    ap.add_argument("--teacher", type=Path, default=M / "digits_cnn.onnx")
    ap.add_argument("--train", type=Path, default=M / "digits_train.npz")
    ap.add_argument("--val", type=Path, default=M / "digits_val.npz")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--ratios", default="0.2,0.4,0.5,0.6")
    ap.add_argument("--rows", default="oneshot,long,gradual,int4")
    ap.add_argument("--sparsities", default="0.5,0.7,0.8,0.9", help="the sparse row's levels")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from onnxsqueeze import prune as api
    from onnxsqueeze.finetune import FinetuneConfig
    from onnxsqueeze.finetune.gradual import gradual_channels

    val = dict(np.load(args.val))
    if args.rewrite:
        rewrite(args.rewrite, val)
        return
    if args.student is None:
        ap.error("--student or --rewrite is required")
    student = onnx.load(args.student)
    train = dict(np.load(args.train))
    inputs = {k: v for k, v in train.items() if k != "labels"}
    rows: list[dict[str, Any]] = []
    print(f"teacher {accuracy(onnx.load(args.teacher), val):.2f}  student {accuracy(student, val):.2f}")

    def record(row: dict[str, Any], t0: float) -> None:
        row["cpu_s"] = round(time.process_time() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)

    for ratio in (float(r) for r in args.ratios.split(",")):
        # ratio 0: the student itself (its oneshot row is plain fine-tuning of the student)
        cand = (
            student
            if ratio == 0
            else api.prune_channels(student, ratio=ratio, calibration=api.limit(inputs, 512))[0]
        )
        wanted = args.rows.split(",")
        ft = None
        for kind, epochs in (("oneshot", args.epochs), ("long", 4 * args.epochs)):
            if kind in wanted or (kind == "oneshot" and "sparse" in wanted):
                t0 = time.process_time()
                m = finetuned(cand, args.teacher, train, epochs, qat=False)
                ft = m if kind == "oneshot" else ft
                q = squeeze_written(m)
                row = {"row": kind, "ratio": ratio, "epochs": epochs, "val": accuracy(m, val)}
                record(row | {"int8_val": accuracy(q, val), "bytes": written_size(q)}, t0)
        if "sparse" in wanted and ft is not None:
            for sparsity in (float(x) for x in args.sparsities.split(",")):
                t0 = time.process_time()
                zeroed, _ = api.prune_weights(ft, sparsity=sparsity, calibration=api.limit(inputs, 512))
                m = finetuned(zeroed, args.teacher, train, args.epochs, qat=False)
                q = squeeze_written(m)
                row = {"row": "sparse", "ratio": ratio, "sparsity": sparsity, "val": accuracy(m, val)}
                row |= {"int8_val": accuracy(q, val), "bytes": written_size(q)}
                row["sparse_tensors"] = len(q.graph.sparse_initializer)
                record(row, t0)
        if "gradual" in wanted:
            t0 = time.process_time()
            m = gradual_channels(
                student,
                args.teacher,
                train,
                ratio=ratio,
                rounds=3,
                config=FinetuneConfig(epochs=args.epochs, time_budget_s=None, seed=0),
            ).model
            record({"row": "gradual", "ratio": ratio, "rounds": 3, "val": accuracy(m, val)}, t0)
        if "int4" in wanted:
            t0 = time.process_time()
            q = to_int4(cand)
            record(
                {"row": "int4 one-shot", "ratio": ratio, "val": accuracy(q, val), "bytes": written_size(q)},
                t0,
            )
            for qat in (False, True):
                t0 = time.process_time()
                q = to_int4(finetuned(cand, args.teacher, train, args.epochs, qat=qat))
                label = "int4 after QAT" if qat else "int4 after ft"
                record({"row": label, "ratio": ratio, "val": accuracy(q, val), "bytes": written_size(q)}, t0)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

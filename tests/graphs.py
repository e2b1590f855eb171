"""Tiny handmade models shared by tests in several modules: ONNX text with seeded initializers.

Builders used by one test module only stay in that module; a builder another module needs moves
here (tests never import from each other's test modules).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from onnxsqueeze import io as sio
from tests.helpers import model_from_text, rand

OPSET = '<ir_version: 8, opset_import: ["" : 17]>'


# --- a small CNN (quantization, search, squeeze) ----------------------------------------------

CNN = """
<ir_version: 8, opset_import: ["" : 17]>
cnn (float[N, 3, 8, 8] x) => (float[N, 4] y) {
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r1 = Relu (c1)
    c2 = Conv <pads = [1, 1, 1, 1]> (r1, w2, b2)
    r2 = Relu (c2)
    g = GlobalAveragePool (r2)
    f = Flatten (g)
    y = Gemm <transB = 1> (f, wf, bf)
}
"""


def cnn() -> onnx.ModelProto:
    return model_from_text(
        CNN,
        {
            "w1": rand((8, 3, 3, 3), 1, 0.3),
            "b1": rand((8,), 2, 0.1),
            "w2": rand((16, 8, 3, 3), 3, 0.2),
            "b2": rand((16,), 4, 0.1),
            "wf": rand((4, 16), 5, 0.5),
            "bf": rand((4,), 6, 0.1),
        },
    )


def cnn_inputs(n: int = 32, seed: int = 7) -> np.ndarray:
    """A seeded batch for :func:`cnn` ([n, 3, 8, 8])."""
    return rand((n, 3, 8, 8), seed)


NO_WEIGHTS = """
<ir_version: 8, opset_import: ["" : 17]>
elementwise (float[N, 4] x) => (float[N, 4] y) {
    r = Relu (x)
    y = Add (r, x)
}
"""


TRANSPOSES = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4] y) {
    a = Transpose <perm = [0, 2, 3, 1]> (x)
    b = Transpose <perm = [0, 3, 1, 2]> (a)
    c = Conv <pads = [1, 1, 1, 1]> (b, w)
    r = Relu (c)
    p = GlobalAveragePool (r)
    y = Flatten (p)
}
"""


def transposes_model() -> onnx.ModelProto:
    """A Transpose pair that cancels: onnxslim removes it, the cleanup does not."""
    return model_from_text(TRANSPOSES, {"w": rand((4, 3, 3, 3), 1, 0.3)})


# --- resolution: image-to-image, classifiers, an FPN ------------------------------------------


def fcn(h: str = "32", w: str = "32") -> onnx.ModelProto:
    """Image-to-image: conv, strided conv, 2x upsampling, skip connection, 1x1 head."""
    text = f"""{OPSET}
    fcn (float[N, 3, {h}, {w}] image) => (float[N, 1, {h}, {w}] mask) {{
        a = Conv <pads = [1, 1, 1, 1]> (image, w1, b1)
        ar = Relu (a)
        d = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (ar, w2, b2)
        dr = Relu (d)
        u = Resize <mode = "linear", coordinate_transformation_mode = "half_pixel"> (dr, , up)
        cat = Concat <axis = 1> (u, ar)
        mask = Conv (cat, w3, b3)
    }}"""
    return model_from_text(
        text,
        {
            "w1": rand((8, 3, 3, 3), 1, 0.3),
            "b1": rand((8,), 2, 0.1),
            "w2": rand((8, 8, 3, 3), 3, 0.2),
            "b2": rand((8,), 4, 0.1),
            "up": np.array([1, 1, 2, 2], np.float32),
            "w3": rand((1, 16, 1, 1), 5, 0.3),
            "b3": rand((1,), 6, 0.1),
        },
    )


def gap_classifier(h: str = "32", w: str = "32") -> onnx.ModelProto:
    text = f"""{OPSET}
    gap (float[N, 3, {h}, {w}] image) => (float[N, 10] logits) {{
        a = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (image, w1, b1)
        ar = Relu (a)
        g = GlobalAveragePool (ar)
        f = Flatten (g)
        logits = Gemm <transB = 1> (f, fc_w, fc_b)
    }}"""
    return model_from_text(
        text,
        {
            "w1": rand((8, 3, 3, 3), 1, 0.3),
            "b1": rand((8,), 2, 0.1),
            "fc_w": rand((10, 8), 3),
            "fc_b": rand((10,), 4),
        },
    )


def flatten_gemm() -> onnx.ModelProto:
    text = f"""{OPSET}
    flat (float[N, 3, 32, 32] image) => (float[N, 10] logits) {{
        a = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (image, w1, b1)
        ar = Relu (a)
        f = Flatten <axis = 1> (ar)
        logits = Gemm <transB = 1> (f, fc_w, fc_b)
    }}"""
    return model_from_text(
        text,
        {
            "w1": rand((4, 3, 3, 3), 1, 0.3),
            "b1": rand((4,), 2),
            "fc_w": rand((10, 4 * 16 * 16), 3, 0.01),
            "fc_b": rand((10,), 4),
        },
    )


def fpn(h: str = "H", w: str = "W") -> onnx.ModelProto:
    """A stride-32 FPN: five stride-2 convs, the deepest map upsampled x2 and added to the stride-16
    skip, then a map head upsampled x16 back to the input size. H and W must be multiples of 32."""
    convs = "\n".join(
        f"c{i} = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> ({'image' if i == 1 else f'r{i - 1}'}, w{i}, b)\n"
        f"        r{i} = Relu (c{i})"
        for i in range(1, 6)
    )
    text = f"""{OPSET}
    fpn (float[N, 3, {h}, {w}] image) => (float[N, 1, {h}, {w}] prob) {{
        {convs}
        up = Resize <mode = "nearest"> (r5, , two)
        p4 = Add (up, r4)
        head = Conv (p4, wh, bh)
        logit = Resize <mode = "linear"> (head, , sixteen)
        prob = Sigmoid (logit)
    }}"""
    inits = {f"w{i}": rand((4, 3 if i == 1 else 4, 3, 3), i, 0.4) for i in range(1, 6)}
    inits.update(
        b=rand((4,), 7, 0.1),
        wh=rand((1, 4, 1, 1), 8, 0.5),
        bh=rand((1,), 9, 0.1),
        two=np.array([1, 1, 2, 2], np.float32),
        sixteen=np.array([1, 1, 16, 16], np.float32),
    )
    return model_from_text(text, inits)


# --- channel pruning: a residual block, a conv-to-dense head ----------------------------------


def zero_out(init: dict[str, np.ndarray], channels: list[int], *names: str, axis: int = 0) -> None:
    """Zero ``channels`` (along ``axis``) of the named initializers, in place: dead channels."""
    for name in names:
        idx = [slice(None)] * init[name].ndim
        idx[axis] = channels  # type: ignore[call-overload]
        init[name][tuple(idx)] = 0.0


RESIDUAL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 8, 8] x) => (float[N, 5] y) {
    a = Conv <pads = [1, 1, 1, 1], kernel_shape = [3, 3]> (x, w0, b0)
    ar = Relu (a)
    b = Conv <pads = [1, 1, 1, 1], kernel_shape = [3, 3]> (ar, w1, b1)
    br = Relu (b)
    c = Conv <pads = [1, 1, 1, 1], kernel_shape = [3, 3]> (br, w2, b2)
    s = Add (c, ar)
    sr = Relu (s)
    p = GlobalAveragePool (sr)
    f = Flatten (p)
    y = Gemm <transB = 1> (f, wf, bf)
}
"""


def residual_model(zero: bool = True) -> onnx.ModelProto:
    """Conv-conv-conv with a residual Add; with ``zero``, two residual-stream channels and two
    inner channels are dead, so pruning exactly those leaves the output unchanged."""
    init = {
        "w0": rand((8, 3, 3, 3), 1),
        "b0": rand((8,), 2),
        "w1": rand((6, 8, 3, 3), 3),
        "b1": rand((6,), 4),
        "w2": rand((8, 6, 3, 3), 5),
        "b2": rand((8,), 6),
        "wf": rand((5, 8), 7),
        "bf": rand((5,), 8),
    }
    if zero:
        zero_out(init, [1, 5], "w0", "b0", "w2", "b2")  # the coupled residual stream
        zero_out(init, [0, 3], "w1", "b1")  # the inner group
    return model_from_text(RESIDUAL, init)


HEAD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 4, 4] x) => (float[N, 5] y) {
    a = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1], strides = [2, 2]> (x, w0, b0)
    ar = Relu (a)
    f = FLATTEN
    h = Gemm <transB = 1> (f, w1, b1)
    hr = Relu (h)
    y = Gemm <transB = 1> (hr, w2, b2)
}
"""


def head_model(flatten: str, extra: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    init = {
        "w0": rand((6, 3, 3, 3), 1),
        "b0": rand((6,), 2),
        "w1": rand((8, 24), 3),
        "b1": rand((8,), 4),
        "w2": rand((5, 8), 5),
        "b2": rand((5,), 6),
        **(extra or {}),
    }
    zero_out(init, [1, 4], "w0", "b0")
    zero_out(init, [0, 7], "w1", "b1")
    return model_from_text(HEAD.replace("FLATTEN", flatten), init)


PADDLE_LIKE = """
<ir_version: 8, opset_import: ["" : 15]>
g (float[N, 3, H, W] x) => (float[N, 4] y) {
    [conv0] a = Conv <pads = [1, 1, 1, 1], kernel_shape = [3, 3]> (x, w0, b0)
    [act0] ar = HardSwish (a)
    [conv1] b = Conv <pads = [1, 1, 1, 1], kernel_shape = [3, 3]> (ar, w1, b1)
    [act1] br = Relu (b)
    [pool] p = GlobalAveragePool (br)
    [flat] f = Flatten (p)
    [fc] y = Gemm <transB = 1> (f, wf, bf)
}
"""


def as_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Move every initializer into a Constant node, as paddle2onnx writes weights."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    consts = [
        onnx.helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t)
        for t in out.graph.initializer
    ]
    del out.graph.initializer[:]
    nodes = consts + list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    onnx.checker.check_model(out, full_check=True)
    return out


def paddle_like(zero: list[int] | None = None) -> onnx.ModelProto:
    init = {
        "w0": rand((8, 3, 3, 3), 40, 0.5),
        "b0": rand((8,), 41, 0.1),
        "w1": rand((12, 8, 3, 3), 42, 0.3),
        "b1": rand((12,), 43, 0.1),
        "wf": rand((4, 12), 44),
        "bf": rand((4,), 45),
    }
    if zero:
        zero_out(init, zero, "w0", "b0")
    return as_constant_nodes(model_from_text(PADDLE_LIKE, init))


# --- weight sparsity: convs and a MatMul ------------------------------------------------------

CONV_MATMUL = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 3, 6, 6] x) => (float[N, 4] y) {
    a = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (x, w0, b0)
    ar = Relu (a)
    c = Conv <kernel_shape = [3, 3]> (ar, w1, b1)
    cr = Relu (c)
    p = GlobalAveragePool (cr)
    f = Flatten (p)
    h = MatMul (f, w2)
    y = Gemm <transB = 1> (h, w3, b3)
}
"""


def conv_matmul() -> onnx.ModelProto:
    return model_from_text(
        CONV_MATMUL,
        {
            "w0": rand((8, 3, 3, 3), 1),
            "b0": rand((8,), 2),
            "w1": rand((16, 8, 3, 3), 3, scale=0.1),  # a smaller scale: global scope prunes it more
            "b1": rand((16,), 4),
            "w2": rand((16, 12), 5),
            "w3": rand((4, 12), 6),
            "b3": rand((4,), 7),
        },
    )


# --- fp16: graphs on which onnxconverter-common fails -----------------------------------------

RESIZE_SCALES = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,N,M] x, float[1,4,P,Q] ref) => (float[1,4,P,Q] y) {
  [conv] a = Conv <pads=[1,1,1,1]> (x, w)
  [relu] r = Relu(a)
  [shape_ref] sr = Shape(ref)
  [shape_x] sx = Shape(x)
  [cast_ref] fr = Cast <to=1> (sr)
  [cast_x] fx = Cast <to=1> (sx)
  [scales] sc = Div(fr, fx)
  [resize] y = Resize <mode="nearest"> (r, , sc)
}
"""

POW_LAYERNORM = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2,6,16] x) => (float[2,6,16] y) {
  [scale_in] h = Mul(x, s)
  [mean] m = ReduceMean <axes=[-1]> (h)
  [center] d = Sub(h, m)
  [pow] p = Pow(d, two)
  [group] pg = Reshape(p, groups)
  [perm] pt = Transpose <perm=[0,1,3,2]> (pg)
  [var] vg = ReduceMean <axes=[-2]> (pt)
  [ungroup] v = Reshape(vg, ungroups)
  [add_eps] ve = Add(v, eps)
  [sqrt] sd = Sqrt(ve)
  [norm] n = Div(d, sd)
  [affine] y = Mul(n, gamma)
}
"""


def resize_scales_case() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    model = model_from_text(RESIZE_SCALES, {"w": rand((4, 4, 3, 3), seed=1, scale=0.3)})
    feeds = {"x": rand((1, 4, 6, 6), seed=2), "ref": rand((1, 4, 12, 12), seed=3)}
    return model, feeds


def pow_layernorm_case() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    # NOTE: onnxruntime's CPU provider runs most fp16 arithmetic through float32 (it inserts casts,
    # drops the pairs between fallback nodes and runs isolated fp16 nodes in float32), so an fp16
    # overflow only shows where a tensor is materialized in fp16: here the Reshape + Transpose of a
    # grouped, channels-first LayerNorm. On GPU every fp16 op shows it.
    inits = {
        "s": np.full(16, 300.0, np.float32),  # activations of a few hundred: (x - mean)^2 > 65504
        "two": np.array(2.0, np.float32),
        "eps": np.array(1e-5, np.float32),
        "gamma": rand((16,), seed=8),
        "groups": np.array([2, 6, 1, 16], np.int64),
        "ungroups": np.array([2, 6, 1], np.int64),
    }
    return model_from_text(POW_LAYERNORM, inits), {"x": rand((2, 6, 16), seed=9)}


# --- benchmarking: an MLP with a dynamic batch, saved to disk ---------------------------------

MLP = """
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[N, 16] x) => (float[N, {out}] y) {{
    h = MatMul(x, w1)
    r = Relu(h)
    y = MatMul(r, w2)
}}
"""


def tiny_mlp(path: Path, hidden: int, out: int = 4, seed: int = 0) -> Path:
    """A two-layer MLP with a dynamic batch, input ``x`` [N, 16]."""
    model = model_from_text(
        MLP.format(out=out),
        {"w1": rand((16, hidden), seed), "w2": rand((hidden, out), seed + 1)},
    )
    return sio.save(model, path)


# --- third-party exporters' patterns (the front door: optimize, squeeze) ----------------------


def _const_attr(name: str, array: np.ndarray) -> str:
    values = ", ".join(f"{v:.6f}" for v in array.ravel())
    dims = ", ".join(str(d) for d in array.shape)
    return f"{name} = Constant <value = float[{dims}] {{{values}}}> ()"


def constant_weights_model(batch: str = "N", h: str = "H", w: str = "W") -> onnx.ModelProto:
    """paddle2onnx style: Conv weights are Constant nodes, BN after the convs, dynamic dims."""
    w1, w2 = rand((8, 3, 3, 3), 1, 0.3), rand((4, 8, 1, 1), 2, 0.3)
    text = f"""
    <ir_version: 8, opset_import: ["" : 13]>
    paddle ({batch_decl(batch, h, w)}) => (float[{batch}, 4] y) {{
        {_const_attr("w1", w1)}
        {_const_attr("w2", w2)}
        c1 = Conv <pads = [1, 1, 1, 1]> (x, w1)
        b1 = BatchNormalization (c1, gamma, beta, mean, var)
        r1 = Relu (b1)
        c2 = Conv (r1, w2)
        p = GlobalAveragePool (c2)
        y = Flatten (p)
    }}
    """
    inits = {
        "gamma": rand((8,), 3, 0.1) + 1.0,
        "beta": rand((8,), 4, 0.1),
        "mean": rand((8,), 5, 0.1),
        "var": np.abs(rand((8,), 6, 0.1)) + 0.5,
    }
    return model_from_text(text, inits)


def batch_decl(batch: str, h: str, w: str) -> str:
    return f"float[{batch}, 3, {h}, {w}] x"


def near_zero_map_model() -> onnx.ModelProto:
    """A text detector's probability map: far below zero on random inputs (sigmoid ~ 1e-9)."""
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    det (float[N, 3, 16, 16] x) => (float[N, 1, 16, 16] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
        y = Sigmoid (c)
    }
    """
    return model_from_text(text, {"w": rand((1, 3, 3, 3), 7, 0.05), "b": np.array([-15.0], np.float32)})


def ctc_model(classes: int = 12) -> onnx.ModelProto:
    """An OCR recogniser: input [1, 1, 8, W], CTC scores [T, 1, C] (time first), declared [1, seqlen].

    Squeeze without axes hides the rank from shape inference (T is dynamic), so the wrong
    declaration passes the checker, as ddddocr's does.
    """
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    ocr (float[1, 1, 8, W] x) => (float[1, seqlen] y) {
        c = Conv <strides = [8, 4]> (x, w)
        t = Transpose <perm = [3, 0, 2, 1]> (c)
        s = Squeeze (t)
        y = Unsqueeze (s, axes)
    }
    """
    return model_from_text(text, {"w": rand((classes, 1, 8, 4), 8, 0.5), "axes": np.array([1], np.int64)})

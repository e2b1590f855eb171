"""RewriteInputResolutionPass: analysis verdicts, rewrites, the interface-keeping mode, the sweep."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxsqueeze.errors import InputError, UnsupportedModelError
from onnxsqueeze.passes import PASSES
from onnxsqueeze.passes.resolution import (
    RewriteInputResolutionPass,
    analyze_resolution,
    group_axes,
    parse_resolution,
    rewrite_resolution,
)
from onnxsqueeze.resolution_sweep import check_runs, compare_outputs
from tests.graphs import OPSET, fcn, flatten_gemm, fpn, gap_classifier
from tests.helpers import model_from_text, rand, run_ort


def reshape_model(target: list[int], tail: str) -> onnx.ModelProto:
    text = f"""{OPSET}
    rs (float[1, 3, 32, 32] image) => (float[1, 4] out) {{
        a = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (image, w1, b1)
        r = Reshape (a, shape)
        {tail}
    }}"""
    return model_from_text(
        text, {"w1": rand((4, 3, 3, 3), 1, 0.3), "b1": rand((4,), 2), "shape": np.array(target, np.int64)}
    )


def test_fully_convolutional_accepted_as_map() -> None:
    v = analyze_resolution(fcn())
    assert v.ok, v.message
    assert v.outputs == {"mask": "map"}
    assert v.size == (32, 32) and v.layout == "NCHW"


def test_gap_classifier_accepted() -> None:
    v = analyze_resolution(gap_classifier())
    assert v.ok, v.message
    assert v.global_pools and v.outputs == {"logits": "fixed"}
    assert "pooled globally" in v.reason


def test_flatten_gemm_refused_naming_the_gemm() -> None:
    v = analyze_resolution(flatten_gemm())
    assert not v.ok
    assert v.op_type == "Gemm" and v.node.startswith("Gemm")
    assert "fc_w" in v.reason and "Flatten" in v.reason
    with pytest.raises(UnsupportedModelError, match="Gemm"):
        rewrite_resolution(flatten_gemm(), resolution=(16, 16))


def test_hardcoded_patchify_reshape_refused_naming_the_reshape() -> None:
    m = reshape_model([1, 4, 4, 4, 4, 4], "out = ReduceMean <axes = [2, 3, 4, 5], keepdims = 0> (r)")
    v = analyze_resolution(m)
    assert not v.ok and v.op_type == "Reshape", v.message
    assert "splits" in v.reason


def test_size_derived_reshape_is_rewritten() -> None:
    """[1, 4, 16, 16] -> [1, 4, 256] -> mean: the 256 comes from the old size and is recomputed."""
    m = reshape_model([1, 4, 256], "out = ReduceMean <axes = [2], keepdims = 0> (r)")
    v = analyze_resolution(m)
    assert v.ok and v.rewrites, v.message
    new, info, modified = rewrite_resolution(m, resolution=(16, 16))
    assert modified and any("[1, 4, 256] -> [1, 4, 64]" in r for r in info.rewrites)
    onnx.checker.check_model(new, full_check=True)
    x = rand((1, 3, 16, 16), 7)
    (y,) = run_ort(new, {"image": x})
    assert y.shape == (1, 4)


def test_position_embedding_refused() -> None:
    text = f"""{OPSET}
    pe (float[1, 3, 16, 16] image) => (float[1, 4, 16, 16] out) {{
        a = Conv <pads = [1, 1, 1, 1]> (image, w1, b1)
        out = Add (a, pos)
    }}"""
    m = model_from_text(
        text, {"w1": rand((4, 3, 3, 3), 1), "b1": rand((4,), 2), "pos": rand((1, 4, 16, 16), 3)}
    )
    v = analyze_resolution(m)
    assert not v.ok and v.op_type == "Add"
    assert "'pos'" in v.reason and "position embedding" in v.reason


def test_uniform_constant_is_shrunk_not_refused() -> None:
    text = f"""{OPSET}
    pe (float[1, 3, 16, 16] image) => (float[1, 4, 16, 16] out) {{
        a = Conv <pads = [1, 1, 1, 1]> (image, w1, b1)
        out = Mul (a, gain)
    }}"""
    gain = np.broadcast_to(rand((1, 4, 1, 1), 3), (1, 4, 16, 16)).copy()
    m = model_from_text(text, {"w1": rand((4, 3, 3, 3), 1), "b1": rand((4,), 2), "gain": gain})
    new, info, _ = rewrite_resolution(m, resolution=(8, 8))
    assert any("[1, 4, 16, 16] -> [1, 4, 1, 1]" in r for r in info.rewrites)
    x = rand((1, 3, 8, 8), 4)
    (y,) = run_ort(new, {"image": x})
    assert y.shape == (1, 4, 8, 8)


def test_fixed_size_resize_refused() -> None:
    text = f"""{OPSET}
    fr (float[1, 3, 30, 30] image) => (float[1, 4, 1, 1] out) {{
        r = Resize <mode = "linear"> (image, , , sizes)
        a = Conv (r, w1, b1)
        out = GlobalAveragePool (a)
    }}"""
    m = model_from_text(
        text, {"sizes": np.array([1, 3, 16, 16], np.int64), "w1": rand((4, 3, 3, 3), 1), "b1": rand((4,), 2)}
    )
    v = analyze_resolution(m)
    assert not v.ok and v.op_type == "Resize" and "fixed-size Resize" in v.reason


def test_size_derived_resize_sizes_rewritten() -> None:
    """A decoder Resize to sizes that are 2x its input (an exported ``size=skip.shape``)."""
    text = f"""{OPSET}
    up (float[1, 3, 32, 32] image) => (float[1, 4, 32, 32] out) {{
        a = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (image, w1, b1)
        out = Resize <mode = "nearest"> (a, , , sizes)
    }}"""
    m = model_from_text(
        text, {"sizes": np.array([1, 4, 32, 32], np.int64), "w1": rand((4, 3, 3, 3), 1), "b1": rand((4,), 2)}
    )
    new, info, _ = rewrite_resolution(m, resolution=(16, 16))
    assert any("[1, 4, 32, 32] -> [1, 4, 16, 16]" in r for r in info.rewrites)
    (y,) = run_ort(new, {"image": rand((1, 3, 16, 16), 3)})
    assert y.shape == (1, 4, 16, 16)


def test_rewrite_static_structure_and_numerics() -> None:
    m = gap_classifier()
    new, info, modified = rewrite_resolution(m, resolution=(16, 16))
    assert modified and info.new_size == (16, 16)
    onnx.checker.check_model(new, full_check=True)
    dims = [d.dim_value for d in new.graph.input[0].type.tensor_type.shape.dim[2:]]
    assert dims == [16, 16]
    # same weights: at the new size the rewritten model computes what the original computes on
    # a 16x16 image (both run in onnxruntime, optimizations off); float32 tolerance 1e-5
    x = rand((2, 3, 16, 16), 9)
    dyn = gap_classifier("H", "W")
    np.testing.assert_allclose(run_ort(new, {"image": x})[0], run_ort(dyn, {"image": x})[0], atol=1e-5)


def test_pass_registered_and_negative() -> None:
    assert PASSES["resolution"] is RewriteInputResolutionPass
    model = ir.serde.deserialize_model(gap_classifier())
    result = RewriteInputResolutionPass(resolution=(32, 32))(model)
    assert result.modified is False
    result = RewriteInputResolutionPass(resolution=(24, 24))(model)
    assert result.modified is True
    assert result.model.graph.inputs[0].shape[2] == 24
    assert RewriteInputResolutionPass(resolution=(24, 24)).options()["resolution"] == [24, 24]


def test_keep_interface_classifier() -> None:
    m = gap_classifier()
    new, info, _ = rewrite_resolution(m, resolution=(16, 16), keep_interface=True)
    onnx.checker.check_model(new, full_check=True)
    assert [d.dim_value for d in new.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 32, 32]
    assert info.resized_outputs == ()
    x = rand((4, 3, 32, 32), 3)
    (y,) = run_ort(new, {"image": x})
    assert y.shape == (4, 10)
    # equals the plain model at 16x16 on the same Resize of the input
    plain, _, _ = rewrite_resolution(m, resolution=(16, 16))
    resized = run_ort(_resize_only(x, 16, 16), {"x": x})[0]
    np.testing.assert_allclose(y, run_ort(plain, {"image": resized})[0], atol=1e-5)


def _resize_only(x: np.ndarray, h: int, w: int) -> onnx.ModelProto:
    n, c = x.shape[:2]
    text = f"""{OPSET}
    rz (float[{n}, {c}, {x.shape[2]}, {x.shape[3]}] x) => (float[{n}, {c}, {h}, {w}] y) {{
        y = Resize <mode = "linear", coordinate_transformation_mode = "half_pixel"> (x, , , sizes)
    }}"""
    return model_from_text(text, {"sizes": np.array([n, c, h, w], np.int64)})


def test_keep_interface_image_to_image_keeps_output_shape() -> None:
    m = fcn()
    new, info, _ = rewrite_resolution(m, resolution=(16, 16), keep_interface=True)
    onnx.checker.check_model(new, full_check=True)
    assert info.resized_outputs == ("mask",)
    x = smooth_images(2)
    (ref,) = run_ort(m, {"image": x})
    (y,) = run_ort(new, {"image": x})
    assert y.shape == ref.shape == (2, 1, 32, 32)
    # exactly: Resize(input) -> the plain model at 16x16 -> Resize back (tolerance 1e-5, float32)
    plain, _, _ = rewrite_resolution(m, resolution=(16, 16))
    small = run_ort(_resize_only(x, 16, 16), {"x": x})[0]
    low = run_ort(plain, {"image": small})[0]
    np.testing.assert_allclose(y, run_ort(_resize_only(low, 32, 32), {"x": low})[0], atol=1e-5)
    # and on smooth images the map resembles the full-resolution one (random weights: loosely)
    assert np.corrcoef(ref.ravel(), y.ravel())[0, 1] > 0.5


def smooth_images(n: int, size: int = 32) -> np.ndarray:
    """Low-frequency images (random 4x4 grids upsampled): what downsampling keeps."""
    coarse = rand((n, 3, 4, 4), 21)
    return np.kron(coarse, np.ones((1, 1, size // 4, size // 4), np.float32))


def test_dynamic_hw() -> None:
    m = fcn("H", "W")
    v = analyze_resolution(m)
    assert v.ok and v.size == (None, None)
    with pytest.raises(InputError, match="dynamic H/W"):
        rewrite_resolution(m, scale=0.5)
    new, info, _ = rewrite_resolution(m, scale=0.5, keep_interface=True)
    assert info.new_size == (None, None)
    for size in (32, 48):
        x = rand((1, 3, size, size), size)
        (y,) = run_ort(new, {"image": x})
        assert y.shape == (1, 1, size, size)
    fixed, _, _ = rewrite_resolution(m, resolution=(24, 24))
    assert [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim[2:]] == [24, 24]
    (y,) = run_ort(fixed, {"image": rand((1, 3, 24, 24), 1)})
    assert y.shape == (1, 1, 24, 24)


def test_kernel_larger_than_map_fails_cleanly() -> None:
    small, _, _ = rewrite_resolution(flatten_free_deep(), resolution=(1, 1))  # the pass runs nothing
    with pytest.raises(UnsupportedModelError, match="1x1"):
        check_runs(small, "image", (1, 1), False, (16, 16))


def flatten_free_deep() -> onnx.ModelProto:
    text = f"""{OPSET}
    deep (float[1, 3, 16, 16] image) => (float[1, 4, 1, 1] out) {{
        a = Conv (image, w1, b1)
        out = GlobalAveragePool (a)
    }}"""
    return model_from_text(text, {"w1": rand((4, 3, 5, 5), 1), "b1": rand((4,), 2)})


def test_bad_arguments() -> None:
    with pytest.raises(InputError):
        parse_resolution("12xab")
    assert parse_resolution("160") == (160, 160) and parse_resolution("120x160") == (120, 160)
    with pytest.raises(InputError, match="exactly one"):
        rewrite_resolution(fcn(), resolution=(16, 16), scale=0.5)
    with pytest.raises(InputError, match="'nope' is not an input"):
        analyze_resolution(fcn(), input_name="nope")
    with pytest.raises(InputError, match="mode 'area'"):
        rewrite_resolution(fcn(), resolution=(16, 16), mode="area")


def test_group_axes() -> None:
    assert group_axes([1, 8, 4, 4], [1, 8, 16]) == [([0], [0]), ([1], [1]), ([2, 3], [2])]
    assert group_axes([1, 8, 16], [1, 8, 4, 4]) == [([0], [0]), ([1], [1]), ([2], [2, 3])]
    assert group_axes([2, 3], [3, 2]) == [([0, 1], [0, 1])]
    assert group_axes([2, 3], [4]) is None


# ---------------------------------------------------------------------------------------------
# real models


@pytest.mark.slow
def test_segmenter_half_resolution_keeps_interface() -> None:
    """The trained U-Net at 64x64 inside a 128x128 interface: same output shape, 1/4 of the MACs."""
    pytest.importorskip("torch")
    from onnxsqueeze import io as sio
    from onnxsqueeze.summary import count_macs
    from tests.helpers import segmenter_assets

    model_path, val_path = segmenter_assets()
    model = sio.load(model_path)
    data = sio.load_npz(val_path)
    half, info, _ = rewrite_resolution(model, resolution=(64, 64), keep_interface=True)
    assert info.resized_outputs == ("mask",)
    x = data["image"]
    (ref,) = run_ort(model, {"image": x})
    (out,) = run_ort(half, {"image": x})
    assert out.shape == ref.shape == (len(x), 1, 128, 128)
    ratio = count_macs(half)[0] / count_macs(model)[0]
    assert 0.24 <= ratio <= 0.26
    m = compare_outputs(ref, out, labels=data["labels"])
    full = compare_outputs(ref, ref, labels=data["labels"])
    # measured when written: IoU vs full resolution 0.556, vs labels 0.545 (full resolution 0.869)
    assert 0.4 < m["iou"] < 1.0 and m["accuracy"] < full["accuracy"]
    assert full["accuracy"] > 0.8


@pytest.mark.slow
def test_static_torch_export_size_constants_rewritten() -> None:
    """A static-shape export folds ``interpolate(size=skip.shape)`` into constants; they are recomputed."""
    torch = pytest.importorskip("torch")
    import io

    from models import segmenter

    torch.manual_seed(0)
    net = segmenter.build_model(4).eval()
    buf = io.BytesIO()
    torch.onnx.export(
        net, (torch.zeros(1, 1, 64, 64),), buf, input_names=["image"], output_names=["mask"], dynamo=False
    )
    model = onnx.load_from_string(buf.getvalue())
    v = analyze_resolution(model)
    assert v.ok and len(v.rewrites) == 2, v.message
    new, info, _ = rewrite_resolution(model, resolution=(32, 48))
    assert any("-> [?, ?, 32, 48]" in r for r in info.rewrites), info.rewrites
    x = rand((1, 1, 32, 48), 3)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_ort(new, {"image": x})[0], expected, atol=1e-4)  # float32 vs torch


@pytest.mark.slow
def test_torchvision_classifier_at_160() -> None:
    from onnxsqueeze import io as sio
    from onnxsqueeze.summary import count_macs
    from tests.helpers import zoo_model

    pytest.importorskip("torch")
    model = sio.load(zoo_model("mobilenet_v3_small"), check=False)
    v = analyze_resolution(model)
    assert v.ok and v.outputs == {"logits": "fixed"} and len(v.global_pools) > 1
    new, _, _ = rewrite_resolution(model, resolution=(160, 160), keep_interface=True)
    (y,) = run_ort(new, {"input": rand((2, 3, 224, 224), 1)})
    assert y.shape == (2, 1000)
    plain, _, _ = rewrite_resolution(model, resolution=(160, 160))
    ratio = count_macs(plain)[0] / count_macs(model)[0]
    assert 0.45 < ratio < 0.58  # (160/224)^2 = 0.51, plus rounding of strided sizes


def test_whole_map_pool_becomes_global_pool() -> None:
    """AveragePool with a kernel equal to the feature map (old exports' AvgPool2d(7)) is a global pool."""
    text = f"""{OPSET}
    ap (float[N, 3, 16, 16] image) => (float[N, 10] logits) {{
        a = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (image, w1, b1)
        p = AveragePool <kernel_shape = [8, 8]> (a)
        f = Flatten (p)
        logits = Gemm <transB = 1> (f, fc_w, fc_b)
    }}"""
    m = model_from_text(
        text,
        {"w1": rand((4, 3, 3, 3), 1), "b1": rand((4,), 2), "fc_w": rand((10, 4), 3), "fc_b": rand((10,), 4)},
    )
    x = rand((2, 3, 16, 16), 5)
    new, info, _ = rewrite_resolution(m, resolution=(24, 24))
    assert any("AveragePool kernel [8, 8] -> GlobalAveragePool" in r for r in info.rewrites)
    assert run_ort(new, {"image": rand((2, 3, 24, 24), 6)})[0].shape == (2, 10)
    same, _, _ = rewrite_resolution(new, resolution=(16, 16))  # exact at the original size (1e-5)
    np.testing.assert_allclose(run_ort(same, {"image": x})[0], run_ort(m, {"image": x})[0], atol=1e-5)


def test_slice_window_scales_with_the_map() -> None:
    """Slice ends derived from the old size: a full range becomes open-ended, a half stays a half."""
    text = f"""{OPSET}
    sl (float[1, 3, 32, 32] image) => (float[1, 4, 16, 8] out) {{
        a = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (image, w1, b1)
        out = Slice (a, starts, ends, axes)
    }}"""
    inits = {
        "w1": rand((4, 3, 3, 3), 1),
        "b1": rand((4,), 2),
        "starts": np.array([0, 0], np.int64),
        "ends": np.array([16, 8], np.int64),
        "axes": np.array([2, 3], np.int64),
    }
    new, info, _ = rewrite_resolution(model_from_text(text, inits), resolution=(16, 16))
    assert info.rewrites and "Slice" in info.rewrites[0]
    (y,) = run_ort(new, {"image": rand((1, 3, 16, 16), 3)})
    assert y.shape == (1, 4, 8, 4)


def test_fixed_slice_window_refused_when_it_cannot_scale() -> None:
    text = f"""{OPSET}
    sl (float[1, 3, 30, 30] image) => (float[1, 4, 15, 7] out) {{
        a = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (image, w1, b1)
        out = Slice (a, starts, ends, axes)
    }}"""
    inits = {
        "w1": rand((4, 3, 3, 3), 1),
        "b1": rand((4,), 2),
        "starts": np.array([0], np.int64),
        "ends": np.array([7], np.int64),
        "axes": np.array([3], np.int64),
    }
    with pytest.raises(UnsupportedModelError, match=r"Slice .* does not scale"):
        rewrite_resolution(model_from_text(text, inits), resolution=(16, 16))


def test_nhwc_input() -> None:
    """Channels-last input (a Keras export): H and W are axes 1 and 2, traced through the Transpose."""
    text = f"""{OPSET}
    nhwc (float[N, 32, 32, 3] image) => (float[N, 10] logits) {{
        t = Transpose <perm = [0, 3, 1, 2]> (image)
        a = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (t, w1, b1)
        g = ReduceMean <axes = [2, 3], keepdims = 0> (a)
        logits = Gemm <transB = 1> (g, fc_w, fc_b)
    }}"""
    m = model_from_text(
        text,
        {"w1": rand((8, 3, 3, 3), 1), "b1": rand((8,), 2), "fc_w": rand((10, 8), 3), "fc_b": rand((10,), 4)},
    )
    v = analyze_resolution(m)
    assert v.ok and v.layout == "NHWC" and v.global_pools, v.message
    new, _, _ = rewrite_resolution(m, resolution=(16, 24), keep_interface=True)
    (y,) = run_ort(new, {"image": rand((2, 32, 32, 3), 5)})
    assert y.shape == (2, 10)
    plain, _, _ = rewrite_resolution(m, resolution=(16, 24))
    assert [d.dim_value for d in plain.graph.input[0].type.tensor_type.shape.dim[1:]] == [16, 24, 3]


def test_constant_of_shape_sized_from_the_input_is_rewritten() -> None:
    """ConstantOfShape tensors at the old size: an added bias map broadcasts, a concatenated one regrows."""
    text = f"""{OPSET}
    cs (float[1, 3, 16, 16] image) => (float[1, 5, 16, 16] out) {{
        a = Conv <pads = [1, 1, 1, 1]> (image, w1, b1)
        bias = ConstantOfShape <value = float[1] {{0.5}}> (bias_shape)
        ab = Add (a, bias)
        ones = ConstantOfShape <value = float[1] {{1.0}}> (ones_shape)
        out = Concat <axis = 1> (ab, ones)
    }}"""
    inits = {
        "w1": rand((4, 3, 3, 3), 1),
        "b1": rand((4,), 2),
        "bias_shape": np.array([1, 4, 16, 16], np.int64),
        "ones_shape": np.array([1, 1, 16, 16], np.int64),
    }
    m = model_from_text(text, inits)
    new, info, _ = rewrite_resolution(m, resolution=(8, 12))
    assert any("[1, 4, 16, 16] -> [1, 4, 1, 1]" in r for r in info.rewrites), info.rewrites
    assert any("[1, 1, 16, 16] -> [1, 1, 8, 12]" in r for r in info.rewrites), info.rewrites
    x = rand((1, 3, 8, 12), 3)
    (y,) = run_ort(new, {"image": x})
    assert y.shape == (1, 5, 8, 12)
    np.testing.assert_array_equal(y[:, 4], 1.0)
    # the same function at the old size (exact: 0 tolerance on the ones channel, 1e-6 on the rest)
    back, _, _ = rewrite_resolution(new, resolution=(16, 16))
    x16 = rand((1, 3, 16, 16), 4)
    np.testing.assert_allclose(run_ort(back, {"image": x16})[0], run_ort(m, {"image": x16})[0], atol=1e-6)


def test_fpn_needs_multiples_of_32() -> None:
    m = fpn()
    v = analyze_resolution(m)
    assert v.ok, v.message
    assert v.stride == (32, 32) and v.stride_node is not None and "Add" in v.stride_node
    assert "multiples of 32" in v.sizes
    # the pattern is real: the original itself fails off the stride ("broadcast 7 by 8" at 240)
    (y,) = run_ort(m, {"image": rand((1, 3, 224, 224), 1)})
    assert y.shape == (1, 1, 224, 224)
    with pytest.raises(Exception, match="(?i)broadcast|shape"):
        run_ort(m, {"image": rand((1, 3, 240, 240), 1)})


def test_plain_classifier_accepts_any_size() -> None:
    assert analyze_resolution(gap_classifier()).stride == (1, 1)
    assert analyze_resolution(fcn()).stride == (2, 2)  # upsampled x2 and concatenated


def test_fpn_dynamic_scale_keep_interface_rounds_at_run_time() -> None:
    new, info, modified = rewrite_resolution(fpn(), scale=0.45, keep_interface=True, size=(320, 320))
    assert modified and info.stride == (32, 32)
    assert info.internal_size == (160, 160)  # 320 * 0.45 = 144 -> 160, the nearest multiple of 32
    assert "multiples of 32" in info.rounded
    onnx.checker.check_model(new, full_check=True)
    # 0.45 of these sizes is no multiple of 32 (100.8, 144, 201.6): unrounded they would fail
    for size in (224, 320, 448):
        (y,) = run_ort(new, {"image": rand((1, 3, size, size), size)})
        assert y.shape == (1, 1, size, size) and np.all(np.isfinite(y))


def test_fpn_static_scale_rounds_and_resolution_off_stride_refused() -> None:
    m = fpn("224", "224")
    new, info, _ = rewrite_resolution(m, scale=0.45)
    assert info.new_size == (96, 96) and "rounded to 96x96" in info.rounded
    (y,) = run_ort(new, {"image": rand((1, 3, 96, 96), 3)})
    assert y.shape == (1, 1, 96, 96)
    with pytest.raises(UnsupportedModelError, match="nearest sizes are 96x96 and 128x128"):
        rewrite_resolution(m, resolution=(100, 100))


def test_fpn_half_resolution_agrees_with_the_original() -> None:
    """Keep the interface at x0.5: on images smoother than the model's deepest stride (2x2 blocks
    of 128 pixels), the map follows the original's (random weights: correlation, not equality)."""
    m = fpn()
    new, _, _ = rewrite_resolution(m, scale=0.5, keep_interface=True, size=(256, 256))
    x = np.kron(rand((4, 3, 2, 2), 5), np.ones((1, 1, 128, 128), np.float32))
    (ref,) = run_ort(m, {"image": x})
    (out,) = run_ort(new, {"image": x})
    assert out.shape == ref.shape
    assert np.corrcoef(ref.ravel(), out.ravel())[0, 1] > 0.85
    assert np.mean(np.abs(out - ref)) < 0.5 * np.mean(np.abs(ref - ref.mean()))


def lstm_ocr() -> onnx.ModelProto:
    """ddddocr's pattern: conv features [N, C, H', W'] -> [W', N, C*H'] -> LSTM over the width."""
    text = f"""{OPSET}
    ocr (float[1, 1, 16, W] image) => (float[T, 2, 1, 5] seq) {{
        c = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (image, wc, bc)
        t = Transpose <perm = [3, 0, 1, 2]> (c)
        s = Shape (t)
        d0 = Gather <axis = 0> (s, i0)
        d1 = Gather <axis = 0> (s, i1)
        d2 = Gather <axis = 0> (s, i2)
        d3 = Gather <axis = 0> (s, i3)
        d23 = Mul (d2, d3)
        u0 = Unsqueeze (d0, ax0)
        u1 = Unsqueeze (d1, ax0)
        u23 = Unsqueeze (d23, ax0)
        target = Concat <axis = 0> (u0, u1, u23)
        x = Reshape (t, target)
        seq = LSTM <hidden_size = 5, direction = "bidirectional"> (x, wl, rl)
    }}"""
    return model_from_text(
        text,
        {
            "wc": rand((4, 1, 3, 3), 1, 0.3),
            "bc": rand((4,), 2, 0.1),
            "i0": np.array(0, np.int64),
            "i1": np.array(1, np.int64),
            "i2": np.array(2, np.int64),
            "i3": np.array(3, np.int64),
            "ax0": np.array([0], np.int64),
            "wl": rand((2, 20, 32), 3, 0.1),
            "rl": rand((2, 20, 5), 4, 0.1),
        },
    )


def test_lstm_over_the_features_refused_naming_it() -> None:
    v = analyze_resolution(lstm_ocr())
    assert not v.ok and v.op_type == "LSTM"
    assert "feature axis" in v.reason and "'wl'" in v.reason and "H" in v.reason


def detector_fixed_output() -> onnx.ModelProto:
    text = f"""{OPSET}
    det (float[1, 3, 32, 32] image) => (float[1, 256, 4] boxes) {{
        c = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (image, w1, b1)
        f = Reshape (c, shape)
        boxes = Transpose <perm = [0, 2, 1]> (f)
    }}"""
    return model_from_text(
        text,
        {"w1": rand((4, 3, 3, 3), 1, 0.3), "b1": rand((4,), 2), "shape": np.array([1, 4, 256], np.int64)},
    )


def test_keep_interface_refuses_a_fixed_anchor_output_but_rewrites_plainly() -> None:
    m = detector_fixed_output()
    with pytest.raises(UnsupportedModelError, match="output 'boxes' .*fixed size along axis 1"):
        rewrite_resolution(m, scale=0.5, keep_interface=True)
    new, _, _ = rewrite_resolution(m, scale=0.5)
    (y,) = run_ort(new, {"image": rand((1, 3, 16, 16), 1)})
    assert y.shape == (1, 64, 4)


def test_pass_is_pure_and_validates_in_requires() -> None:
    with pytest.raises(ir.passes.PreconditionError, match="Gemm"):
        RewriteInputResolutionPass(resolution=(16, 16))(ir.serde.deserialize_model(flatten_gemm()))
    with pytest.raises(ir.passes.PreconditionError, match="mode 'area'"):
        RewriteInputResolutionPass(resolution=(16, 16), mode="area")(ir.serde.deserialize_model(fcn()))
    result = RewriteInputResolutionPass(scale=0.5, keep_interface=True, size=(256, 256))(
        ir.serde.deserialize_model(fpn())
    )
    assert result.modified
    out = ir.serde.serialize_model(result.model)
    (y,) = run_ort(out, {"image": rand((1, 3, 256, 256), 1)})
    assert y.shape == (1, 1, 256, 256)


def test_lstm_over_the_width_after_pooling_the_height_is_accepted() -> None:
    """An OCR that averages the height away before its LSTM runs at any size; the sequence varies."""
    text = f"""{OPSET}
    ocr (float[1, 1, 16, W] image) => (float[T, 2, 1, 5] seq) {{
        c = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (image, wc, bc)
        p = ReduceMean <axes = [2], keepdims = 0> (c)
        x = Transpose <perm = [2, 0, 1]> (p)
        seq = LSTM <hidden_size = 5, direction = "bidirectional"> (x, wl, rl)
    }}"""
    m = model_from_text(
        text,
        {
            "wc": rand((4, 1, 3, 3), 1, 0.3),
            "bc": rand((4,), 2, 0.1),
            "wl": rand((2, 20, 4), 3, 0.3),
            "rl": rand((2, 20, 5), 4, 0.3),
        },
    )
    v = analyze_resolution(m, probe=(16, 64))
    assert v.ok, v.message
    assert v.outputs == {"seq": "varies"}
    new, info, _ = rewrite_resolution(m, scale=0.5, keep_interface=True, size=(16, 64))
    assert info.varying_outputs == ("seq",)
    (y,) = run_ort(new, {"image": rand((1, 1, 16, 64), 5)})
    assert y.shape == (16, 2, 1, 5)  # the sequence of the 8x32 internal image: 32 / 2

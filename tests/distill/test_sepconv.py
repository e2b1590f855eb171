"""The depthwise-separable rewrite keeps shapes and counts parameters and MACs exactly."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from onnxsqueeze.distill.sepconv import count_params, separate_convs  # noqa: E402
from onnxsqueeze.errors import UnsupportedModelError  # noqa: E402


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),  # rewritten
        nn.ReLU(),
        nn.Conv2d(16, 32, 5, stride=2, padding=2, bias=False),  # rewritten, strided
        nn.Conv2d(32, 32, 3, padding=1, groups=32),  # depthwise already: kept
        nn.Conv2d(32, 8, 1),  # pointwise: kept
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def test_rewrite_preserves_shapes_and_counts_parameters() -> None:
    model = _net()
    x = torch.randn(2, 3, 16, 16)
    before = count_params(model)
    assert before == (3 * 16 * 9 + 16) + (16 * 32 * 25) + (32 * 9 + 32) + (32 * 8 + 8) + (8 * 4 + 4)
    report = separate_convs(model, (x,))
    assert model(x).shape == (2, 4)
    assert [c.name for c in report.convs] == ["0", "2"]
    # conv 0: depthwise 3*9 (no bias: BN follows) + BN 2*3 + pointwise 3*16 + bias 16
    assert report.convs[0].params_before == 3 * 16 * 9 + 16
    assert report.convs[0].params_after == 3 * 9 + 2 * 3 + 3 * 16 + 16
    # conv 2: depthwise 16*25 + BN 2*16 + pointwise 16*32, no bias
    assert report.convs[1].params_after == 16 * 25 + 2 * 16 + 16 * 32
    assert report.params_before == before
    assert report.params_after == count_params(model)
    assert report.params_after == before - sum(c.params_before - c.params_after for c in report.convs)
    # every intermediate shape is kept: the separable block maps like the conv it replaces
    for name in ("0", "2"):
        block = model.get_submodule(name)
        assert isinstance(block, nn.Sequential)
        assert block[0].groups == block[0].in_channels


def test_mac_reduction_is_one_over_n_plus_one_over_k_squared() -> None:
    cin, n, k = 32, 64, 3
    model = nn.Sequential(nn.Conv2d(cin, n, k, padding=1, bias=False))
    report = separate_convs(model, (torch.randn(1, cin, 8, 8),), norm=False, activation=False)
    conv = report.convs[0]
    assert conv.macs_before == 8 * 8 * n * cin * k * k
    assert conv.macs_after == 8 * 8 * cin * k * k + 8 * 8 * n * cin
    assert conv.macs_after / conv.macs_before == pytest.approx(1 / n + 1 / k**2)
    # without a BN after it, the depthwise conv keeps a bias of C_in
    assert conv.params_after == cin * k * k + cin + cin * n
    assert report.mac_ratio == pytest.approx(1 / n + 1 / k**2)


def test_nothing_to_rewrite_is_an_error_naming_the_module() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, groups=4))
    with pytest.raises(UnsupportedModelError, match="Sequential: no Conv2d"):
        separate_convs(model, (torch.randn(1, 4, 8, 8),))

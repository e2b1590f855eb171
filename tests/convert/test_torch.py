"""from_torch: layers convert and verify, exporter fallback, opsets, safety of file loading."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from onnxsqueeze.convert import from_torch  # noqa: E402
from onnxsqueeze.convert import torch as ct  # noqa: E402
from onnxsqueeze.errors import ConversionError, InputError, VerificationError  # noqa: E402
from tests.convert.factories import Noisy, tiny_cnn  # noqa: E402
from tests.helpers import run_ort  # noqa: E402

TOL = 1e-4  # fp32 end to end: torch CPU kernels vs onnxruntime CPU kernels


def input_dims(model: onnx.ModelProto) -> list[list[int | str]]:
    return [[d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input]


def ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


def test_cnn_converts_with_dynamic_batch_and_folded_bn() -> None:
    net = tiny_cnn()
    result = from_torch(net, torch.randn(1, 3, 16, 16), input_names=["input"], output_names=["logits"])
    onnx.checker.check_model(result.model, full_check=True)
    assert result.exporter == ct.DYNAMO
    assert result.passed and result.max_abs <= TOL
    assert input_dims(result.model) == [["batch", 3, 16, 16]]
    assert [o.name for o in result.model.graph.output] == ["logits"]
    assert "BatchNormalization" not in ops(result.model)
    assert not result.model.graph.value_info  # the exporter's intermediate shapes slowed onnxruntime
    # verified at batch 2 although the example had batch 1: the dynamic axis was exercised
    assert result.report.inputs == {"input": (2, 3, 16, 16)}
    # and it runs at yet another batch, matching torch
    x = np.random.default_rng(1).standard_normal((5, 3, 16, 16)).astype(np.float32)
    (got,) = run_ort(result.model, {"input": x})
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    assert not net.training


def test_static_batch() -> None:
    result = from_torch(tiny_cnn(), torch.randn(3, 3, 16, 16), dynamic_batch=False)
    assert input_dims(result.model) == [[3, 3, 16, 16]]
    assert result.report.inputs == {"x": (3, 3, 16, 16)}


def test_transformer_block_multihead_attention_layernorm_gelu() -> None:
    torch.manual_seed(0)
    block = nn.TransformerEncoderLayer(
        d_model=32, nhead=4, dim_feedforward=64, dropout=0.1, activation="gelu", batch_first=True
    )
    block.train()  # from_torch exports in eval mode (dropout off) and restores the mode
    result = from_torch(block, torch.randn(2, 7, 32))
    assert block.training
    assert result.passed and result.max_abs <= TOL
    assert input_dims(result.model)[0][0] == "batch"
    assert {"Softmax", "MatMul"} <= ops(result.model) or "Attention" in ops(result.model)


def test_keyword_inputs_and_integer_ids() -> None:
    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.Embedding(50, 16)
            self.proj = nn.Linear(16, 8)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.proj(self.emb(input_ids)) * attention_mask[..., None]
            return {"hidden": h, "pooled": h.sum(1) / attention_mask.sum(1, keepdim=True)}

    ids = torch.randint(0, 50, (1, 6))
    result = from_torch(Encoder(), {"input_ids": ids, "attention_mask": torch.ones(1, 6, dtype=torch.int64)})
    assert [i.name for i in result.model.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in result.model.graph.output] == ["output_0", "output_1"]
    assert result.passed and result.report.inputs["input_ids"] == (2, 6)


def test_dynamic_sequence_axis() -> None:
    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.Embedding(50, 16)
            self.block = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            h = self.block(self.emb(input_ids), src_key_padding_mask=attention_mask == 0)
            return (h * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdim=True)

    ids = torch.randint(1, 50, (1, 6))
    seq = {1: "sequence"}
    result = from_torch(
        Encoder(),
        (ids, torch.ones(1, 6, dtype=torch.int64)),
        input_names=["input_ids", "attention_mask"],
        dynamic_axes={"input_ids": seq, "attention_mask": seq},
    )
    assert input_dims(result.model) == [["batch", "sequence"], ["batch", "sequence"]]
    assert result.report.inputs == {"input_ids": (2, 7), "attention_mask": (2, 7)}  # both axes exercised
    assert result.passed and result.max_abs <= TOL
    with pytest.raises(InputError, match="rank 2"):
        from_torch(
            Encoder(), (ids, torch.ones(1, 6, dtype=torch.int64)), dynamic_axes={"input_ids": {2: "x"}}
        )


def test_requested_opset_below_dynamo_range_falls_back_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="TorchScript exporter"):
        result = from_torch(tiny_cnn(), torch.randn(1, 3, 16, 16), opset=17)
    assert result.exporter == ct.TORCHSCRIPT
    assert result.opset == 17
    assert any("opset 17" in w for w in result.warnings)
    assert result.passed and input_dims(result.model) == [["batch", 3, 16, 16]]


def test_dynamo_failure_falls_back_to_torchscript() -> None:
    class DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scale = int(x.abs().sum() >= 0)  # always 1, but a data-dependent branch for torch.export
            return torch.tanh(x) * scale

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = from_torch(DataDependent(), torch.randn(2, 4))
    assert result.exporter == ct.TORCHSCRIPT
    assert "dynamo exporter failed" in result.warnings[0]
    assert result.passed


def test_unsupported_op_names_the_op() -> None:
    class SVD(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.svdvals(x)

    with warnings.catch_warnings(), pytest.raises(ConversionError, match=r"(?i)svd"):
        warnings.simplefilter("ignore")
        from_torch(SVD(), torch.randn(2, 4, 4))


def test_verification_gate() -> None:
    with pytest.raises(VerificationError, match="exceeds tolerance"):
        from_torch(Noisy(), torch.randn(2, 4))
    result = from_torch(Noisy(), torch.randn(2, 4), strict=False)
    assert not result.passed and result.max_abs > 0.1


def test_verify_on_given_data() -> None:
    data = {"x": np.random.default_rng(3).standard_normal((4, 3, 16, 16)).astype(np.float32)}
    result = from_torch(tiny_cnn(), torch.randn(1, 3, 16, 16), data=data, data_label="d.npz")
    assert result.report.source == "d.npz" and result.report.inputs == {"x": (4, 3, 16, 16)}
    with pytest.raises(InputError, match="no array"):
        from_torch(tiny_cnn(), torch.randn(1, 3, 16, 16), data={"input": data["x"]})


def test_exported_program_and_torchscript_sources(tmp_path: Path) -> None:
    net = tiny_cnn()
    x = torch.randn(2, 3, 16, 16)
    ep = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("n")},))
    torch.export.save(ep, tmp_path / "m.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, x), tmp_path / "m.ts")
    assert ct.file_kind(tmp_path / "m.pt2") == "exported-program"
    assert ct.file_kind(tmp_path / "m.ts") == "torchscript"

    program, _ = ct.load_source(tmp_path / "m.pt2")
    result = from_torch(program)  # example inputs stored in the program
    assert result.passed and input_dims(result.model)[0][0] == "batch"

    script, kind = ct.load_source(tmp_path / "m.ts")
    assert kind == "torchscript"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ScriptModule goes straight to the TorchScript exporter
        result = from_torch(script, x)
    assert result.exporter == ct.TORCHSCRIPT and result.warnings == ()
    assert result.passed and input_dims(result.model)[0][0] == "batch"


def test_pickled_module_is_refused_unless_trusted(tmp_path: Path) -> None:
    path = tmp_path / "full.pt"
    torch.save(tiny_cnn(), path)
    with pytest.raises(InputError, match="arbitrary code") as e:
        ct.load_source(path)
    assert "--trust-pickle" in str(e.value) and "state_dict" in str(e.value)
    with pytest.raises(InputError, match="arbitrary code"):
        ct.load_weights(path)
    module, kind = ct.load_source(path, trust_pickle=True)
    assert kind == "pickled module" and isinstance(module, nn.Module)


def test_state_dict_with_factory(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    net = tiny_cnn()
    torch.save(net.state_dict(), path)
    with pytest.raises(InputError, match="--factory"):
        ct.load_source(path)
    built = ct.build_from_factory("tests.convert.factories:tiny_cnn", path)
    for a, b in zip(built.state_dict().values(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    torch.save({"fc.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="do not fit"):
        ct.build_from_factory("tests.convert.factories:tiny_cnn", tmp_path / "bad.pt")
    for spec, msg in [
        ("nocolon", "expected package.module:callable"),
        ("no_such_mod:f", "cannot import"),
        ("tests.convert.factories:nope", "no attribute"),
    ]:
        with pytest.raises(InputError, match=msg):
            ct.build_from_factory(spec)


def test_missing_torch_gives_a_one_line_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ConversionError, match=r"pip install 'onnxsqueeze\[torch\]'"):
        ct.from_torch(object(), ())


def test_cli_import_does_not_load_frameworks() -> None:
    import subprocess
    import sys

    code = (
        "import sys, onnxsqueeze.cli.app, onnxsqueeze.convert; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

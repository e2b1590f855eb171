"""A candidate's size is its written file, weights stored sparse where that is smaller: the
``sparsity`` knob moves the size, and ``apply`` replays the sparse-stored best byte for byte."""

from __future__ import annotations

import onnx

from onnxsqueeze import io as sio
from onnxsqueeze.manifest import deployable
from tests.graphs import cnn
from tests.helpers import apply_recipe, rand, self_labelled_squeezer, squeeze_small_cnn


def test_the_sparsity_knob_lowers_the_measured_size_to_the_sparse_file():
    sq = self_labelled_squeezer(cnn(), rand((80, 3, 8, 8), 5), 16, techniques=("sparsity",))
    assert "size" in next(k for k in sq.knobs if k.name == "sparsity").improves
    sizes = {}
    for s in (0.3, 0.9):
        p = sq.evaluate({"sparsity": s})
        dense = len(deployable(sq.build({"sparsity": s})).SerializeToString(deterministic=True))
        sizes[s] = (p.size, dense)
    mild, strong = sizes[0.3], sizes[0.9]
    assert mild[1] == strong[1]  # stored densely, every sparsity has the same bytes
    assert strong[0] < 0.5 * strong[1]  # stored sparse: the 90% sparse model's file is under half
    assert strong[0] < mild[0] <= mild[1]


def test_a_squeeze_writes_the_sparse_stored_best_and_apply_replays_it_byte_for_byte(tmp_path):
    src, out, results = squeeze_small_cnn(tmp_path, "sparsity,int8-weights")
    best = results["best"]
    # on a model this small the Cast and Mul nodes of int8 weights cost more than they save
    assert best["settings"]["sparsity"] >= 0.8, best["label"]
    written = out / best["file"]
    assert best["size"] == written.stat().st_size  # the size searched for is the file's
    sio.load(written)  # the loader's full check passes (on the densified form)
    model = onnx.load(str(written))
    assert model.graph.sparse_initializer
    assert all(s.indices.int64_data for s in model.graph.sparse_initializer)
    assert apply_recipe(out, src) == written.read_bytes()

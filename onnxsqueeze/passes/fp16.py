"""Half precision that keeps a model loadable and accurate: ``ConvertToFloat16Pass``.

Every node is planned into one of three kinds:

- **convert**: it computes in the low precision (float16, or bfloat16). A node converts when it is
  in the standard ONNX domain, its schema lets the type variable ``T`` of its float outputs be the
  low type, ``T`` is bound by one of its inputs (so the output type follows the inputs and no
  attribute changes; Cast, Constant and ConstantOfShape are rewritten explicitly), it is not in
  ``block_ops`` or ``keep_fp32``, it has no subgraph, no float32 constant bound to ``T`` would
  lose accuracy in the low type (``|w| > 65504`` or ``||w - fp16(w)|| / ||w|| > 1e-3``), and its
  low outputs do not only feed fixed-``tensor(float)`` inputs such as Resize ``scales`` (a shape
  computation stays float32, exactly as the runtime requires it).
- **stay**: it has float outputs but runs in float32; every one of its inputs gets its original type.
- **neutral**: no float output (Shape, ArgMax, Less, ...): a float input may stay in the low type
  when the schema allows it, otherwise it is cast back.

Then each input gets the dtype its node requires: the low type for inputs bound to a converted
type variable, the original type for every other (Resize ``scales``/``roi``, Range, and all
inputs of staying nodes). Where a value's new dtype differs, one Cast is inserted in the
consumer's graph per value and dtype. Constants (initializers, Constant nodes) and Cast/
ConstantOfShape outputs are converted in place only when every consumer wants the low type;
otherwise they keep float32 and are cast where needed, so a weight shared by a float32 node never
loses precision. Subgraphs (If, Loop, Scan) are converted the same way, but their own inputs and
outputs keep their declared types, so a control-flow node's signature never changes; values
captured from an outer scope are cast inside the subgraph that uses them.

With ``keep_io_types`` (the default) graph inputs and outputs keep float32: callers keep feeding
float32. Finally, exact redundant casts are removed: a Cast to the type its input already has,
and ``Cast(to=low)(Cast(to=float)(x_low))`` which is ``x_low``.

The pass does no I/O and runs nothing: measured decisions (which nodes overflow, underflow or lose
accuracy on real inputs) arrive as ``keep_fp32`` node names from ``onnxsqueeze.precision``.

Requires: node names unique where ``keep_fp32`` refers to them (``onnxsqueeze.precision.prepare``
runs onnx-ir's NameFixPass). Ensures: the model passes ``onnx.checker`` and loads in onnxruntime.
"""

# NOTE: this module imports nothing from cli/, bench/ or search, and no runtime.

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import ClassVar

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes import common as ir_common

from onnxsqueeze.errors import InputError
from onnxsqueeze.passes.base import SqueezePass

FLOAT = ir.DataType.FLOAT
LOW_TYPES = {"float16": ir.DataType.FLOAT16, "bfloat16": ir.DataType.BFLOAT16}
FP16_MAX = 65504.0
# A constant whose relative L2 rounding error in the low type exceeds twice the unit roundoff
# (fp16 2**-11, bf16 2**-8; plain rounding stays below it) has overflowed or largely underflowed.
WEIGHT_REL_ERROR = {ir.DataType.FLOAT16: 2.0**-10, ir.DataType.BFLOAT16: 2.0**-7}

# Ops kept in float32 by default: reductions over many elements and normalizations (variance and
# its epsilon underflow or overflow in fp16), cumulative sums, and ops whose float inputs are
# coordinates or indices (boxes, ranges, random seeds) where fp16 rounding changes the result.
DEFAULT_BLOCK_OPS: frozenset[str] = frozenset(
    {
        "BatchNormalization",
        "InstanceNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "MeanVarianceNormalization",
        "LpNormalization",
        "CumSum",
        "Range",
        "RoiAlign",
        "NonMaxSuppression",
        "TopK",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Multinomial",
        "EyeLike",
        "STFT",
        "DFT",
    }
)

# Nodes whose output type is set by an attribute and that this pass rewrites explicitly.
_ATTR_TYPED = ("Cast", "Constant", "ConstantOfShape")


class Fp16PassResult(ir.passes.PassResult):
    """The pass result plus what stayed float32 and why, and the casts it inserted and removed."""

    def __init__(
        self,
        model: ir.Model,
        modified: bool,
        *,
        fp32_nodes: dict[str, str],
        converted_nodes: int,
        casts_inserted: int,
        casts_removed: int,
    ) -> None:
        super().__init__(model, modified)
        self.fp32_nodes = fp32_nodes
        self.converted_nodes = converted_nodes
        self.casts_inserted = casts_inserted
        self.casts_removed = casts_removed


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConvertToFloat16Pass(SqueezePass):
    """Convert float32 computation to float16 (or bfloat16), keeping risky nodes in float32.

    Args:
        keep_io_types: graph inputs and outputs keep float32 (casts at the boundary).
        block_ops: op types that always stay float32 (default: ``DEFAULT_BLOCK_OPS``).
        keep_fp32: node names that stay float32 (measured risks, user choices).
        dtype: ``"float16"`` or ``"bfloat16"``.
    """

    name: ClassVar[str] = "fp16"
    keep_io_types: bool = True
    block_ops: frozenset[str] = DEFAULT_BLOCK_OPS
    keep_fp32: frozenset[str] = frozenset()
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.dtype not in LOW_TYPES:
            raise InputError(f"fp16: dtype '{self.dtype}' is not one of {', '.join(LOW_TYPES)}")

    def call(self, model: ir.Model) -> Fp16PassResult:
        plan = plan_conversion(model, block_ops=self.block_ops, keep_fp32=self.keep_fp32, dtype=self.dtype)
        if not plan.convert:
            return Fp16PassResult(
                model, False, fp32_nodes=plan.reasons, converted_nodes=0, casts_inserted=0, casts_removed=0
            )
        rewriter = _Rewriter(model, plan, keep_io_types=self.keep_io_types)
        inserted = rewriter.run()
        removed = remove_redundant_casts(model)
        ir_common.RemoveUnusedNodesPass()(model)
        converted = sum(1 for n in plan.convert if n.op_type not in ("Constant",))
        return Fp16PassResult(
            model,
            True,
            fp32_nodes=plan.reasons,
            converted_nodes=converted,
            casts_inserted=inserted,
            casts_removed=removed,
        )


# ----------------------------------------------------------------------------------------------
# Planning


@dataclasses.dataclass
class Plan:
    """Which nodes convert, which stay float32 (with reasons) and the type variables to switch."""

    low: ir.DataType
    convert: set[ir.Node]
    stay: set[ir.Node]
    low_vars: dict[ir.Node, set[str]]
    schemas: dict[ir.Node, onnx.defs.OpSchema | None]
    reasons: dict[str, str]
    orig: dict[ir.Value, ir.DataType | None]


def iter_nodes(graph: ir.Graph) -> Iterator[ir.Node]:
    """Every node of a graph and of its subgraphs, in order."""
    for node in graph:
        yield node
        for attr in node.attributes.values():
            if isinstance(attr, ir.Attr) and attr.type == ir.AttributeType.GRAPH:
                yield from iter_nodes(attr.as_graph())
            elif isinstance(attr, ir.Attr) and attr.type == ir.AttributeType.GRAPHS:
                for g in attr.as_graphs():
                    yield from iter_nodes(g)


def subgraphs(node: ir.Node) -> list[ir.Graph]:
    out: list[ir.Graph] = []
    for attr in node.attributes.values():
        if isinstance(attr, ir.Attr) and attr.type == ir.AttributeType.GRAPH:
            out.append(attr.as_graph())
        elif isinstance(attr, ir.Attr) and attr.type == ir.AttributeType.GRAPHS:
            out.extend(attr.as_graphs())
    return out


def node_label(node: ir.Node) -> str:
    return node.name or f"{node.op_type}({', '.join(o.name or '?' for o in node.outputs)})"


def _schema(node: ir.Node, opsets: dict[str, int]) -> onnx.defs.OpSchema | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    version = node.version or opsets.get("", opsets.get("ai.onnx", onnx.defs.onnx_opset_version()))
    try:
        return onnx.defs.get_schema(node.op_type, version, "")
    except onnx.defs.SchemaError:
        return None


def formal_type(params: Sequence[onnx.defs.OpSchema.FormalParameter], i: int) -> str | None:
    """The type string (``T`` or ``tensor(float)``) of formal parameter ``i`` (variadic aware)."""
    if i < len(params):
        return params[i].type_str
    if params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return params[-1].type_str
    return None


def _constraints(schema: onnx.defs.OpSchema) -> dict[str, set[str]]:
    return {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}


def _type_str(dtype: ir.DataType) -> str:
    return f"tensor({onnx.helper.tensor_dtype_to_string(int(dtype)).removeprefix('TensorProto.').lower()})"


def _const_array(value: ir.Value) -> np.ndarray | None:
    """The array of a constant value: an initializer or a Constant node's output."""
    if value.const_value is not None and (value.is_initializer() or value.producer() is None):
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and producer.domain in ("", "ai.onnx"):
        attr = producer.attributes.get("value")
        if attr is not None and attr.type == ir.AttributeType.TENSOR:
            return attr.as_tensor().numpy()
    return None


def low_precision_error(array: np.ndarray, low: ir.DataType) -> float:
    """Relative L2 error of storing ``array`` in the low type (inf on overflow).

    Computed in blocks of about a million values, so a weight of a model over 2 GB costs a few
    MB of float64 temporaries, not eight times its own size.
    """
    flat = array.reshape(-1)
    block = 1 << 20
    norm_sq = err_sq = 0.0
    for start in range(0, flat.size, block):
        a = flat[start : start + block].astype(np.float64)
        if not np.all(np.isfinite(a)):
            return 0.0
        if low == ir.DataType.FLOAT16:
            if a.size and float(np.max(np.abs(a))) > FP16_MAX:
                norm_sq = float("inf")
                continue
            rounded = a.astype(np.float16).astype(np.float64)
        else:  # bfloat16: round to nearest even on the top 16 bits of float32
            bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
            kept = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
            rounded = kept.astype(np.uint32).view(np.float32).astype(np.float64)
        norm_sq += float(np.dot(a, a))
        err_sq += float(np.dot(a - rounded, a - rounded))
    if norm_sq == float("inf"):
        return float("inf")
    if norm_sq == 0.0:
        return 0.0
    return float(np.sqrt(err_sq) / np.sqrt(norm_sq))


def _is_graph_input_initializer(value: ir.Value) -> bool:
    return value.is_initializer() and value.is_graph_input()


def plan_conversion(
    model: ir.Model,
    *,
    block_ops: frozenset[str] = DEFAULT_BLOCK_OPS,
    keep_fp32: frozenset[str] = frozenset(),
    dtype: str = "float16",
) -> Plan:
    """Decide, for every node of the model and its subgraphs, whether it converts or stays."""
    low = LOW_TYPES[dtype]
    low_str = _type_str(low)
    opsets = dict(model.opset_imports)
    _infer_dtypes(model, opsets)
    plan = Plan(low, set(), set(), {}, {}, {}, {})
    nodes = list(iter_nodes(model.graph))
    for node in nodes:
        for v in [*node.inputs, *node.outputs]:
            if v is not None and v not in plan.orig:
                plan.orig[v] = v.dtype
    for v in [*model.graph.inputs, *model.graph.outputs]:
        plan.orig.setdefault(v, v.dtype)

    for node in nodes:
        schema = _schema(node, opsets)
        plan.schemas[node] = schema
        float_outs = [o for o in node.outputs if o is not None and o.dtype == FLOAT]
        if not float_outs:
            continue  # neutral
        label = node_label(node)
        reason = _stay_reason(node, schema, low, low_str, block_ops, keep_fp32, plan)
        if reason is None:
            plan.convert.add(node)
        else:
            plan.stay.add(node)
            plan.reasons[label] = reason

    _keep_shape_computations(nodes, plan)
    return plan


def _stay_reason(
    node: ir.Node,
    schema: onnx.defs.OpSchema | None,
    low: ir.DataType,
    low_str: str,
    block_ops: frozenset[str],
    keep_fp32: frozenset[str],
    plan: Plan,
) -> str | None:
    if node.name and node.name in keep_fp32:
        return "kept float32 on request (measured risk or --keep-node)"
    if node.op_type in block_ops:
        return f"{node.op_type} is in the block list"
    if schema is None:
        return f"op {node.domain or 'ai.onnx'}::{node.op_type} has no known schema"
    if subgraphs(node):
        return "control flow: its signature stays float32, its subgraphs are converted inside"
    if node.op_type in _ATTR_TYPED:
        value = node.attributes.get("value")
        if node.op_type == "Constant" and (value is None or value.type != ir.AttributeType.TENSOR):
            return "scalar Constant attribute (value_float) kept as is"
        return None  # Cast, Constant, ConstantOfShape: converted when every consumer wants it
    constraints = _constraints(schema)
    low_vars: set[str] = set()
    input_vars = {formal_type(schema.inputs, i) for i in range(len(node.inputs))}
    for i, out in enumerate(node.outputs):
        if out is None or out.dtype != FLOAT:
            continue
        var = formal_type(schema.outputs, i)
        if var is None or var not in constraints:
            return f"output {i} is fixed float32 in the {node.op_type} schema"
        if low_str not in constraints[var]:
            return f"{node.op_type} does not accept {low.name.lower()} for {var}"
        if var not in input_vars:
            return f"output type of {node.op_type} is set by an attribute"
        low_vars.add(var)
    for i, v in enumerate(node.inputs):
        if v is None or formal_type(schema.inputs, i) not in low_vars:
            continue
        if v.dtype is None and v.const_value is None:
            # Made by an op without an ONNX schema (com.microsoft::DynamicQuantizeLSTM): no cast
            # can be planned for an unknown type, so the reader stays with it.
            maker = v.producer()
            return f"input '{v.name}' has an unknown type" + (
                f" (made by {maker.domain or 'ai.onnx'}::{maker.op_type})" if maker is not None else ""
            )
        array = _const_array(v)
        if array is not None and array.dtype == np.float32 and array.size:
            err = low_precision_error(array, low)
            if err > WEIGHT_REL_ERROR[low]:
                peak = float(np.max(np.abs(array)))
                what = "overflows" if not np.isfinite(err) else f"loses {err:.1%} (relative L2) in"
                return f"constant '{v.name}' (max |w| = {peak:.3g}) {what} {low.name.lower()}"
    plan.low_vars[node] = low_vars
    return None


def _keep_shape_computations(nodes: list[ir.Node], plan: Plan) -> None:
    """Keep float32 the converted nodes whose float outputs only feed fixed float32 inputs."""
    shape_nodes: set[ir.Node] = set()
    changed = True
    while changed:
        changed = False
        for node in reversed(nodes):
            if node not in plan.convert or node.op_type == "Constant":
                continue
            outs = [o for o in node.outputs if o is not None and plan.orig.get(o) == FLOAT]
            uses = [(n, i) for o in outs for n, i in o.uses()]
            if not uses or any(o.is_graph_output() for o in outs):
                continue
            if all(n in shape_nodes or _fixed_float_input(n, i, plan) for n, i in uses):
                plan.convert.discard(node)
                plan.stay.add(node)
                shape_nodes.add(node)
                plan.reasons[node_label(node)] = "computes a float32-only input (shape or scales)"
                changed = True


def _fixed_float_input(node: ir.Node, index: int, plan: Plan) -> bool:
    schema = plan.schemas.get(node)
    if schema is None:
        return False
    var = formal_type(schema.inputs, index)
    return var == "tensor(float)"


def _infer_dtypes(model: ir.Model, opsets: dict[str, int]) -> None:
    """Fill in missing value dtypes: onnx shape inference first, then schema propagation."""
    missing = any(o.dtype is None for n in iter_nodes(model.graph) for o in n.outputs if o is not None)
    if not missing:
        return
    # Best effort: custom ops or invalid shapes make it fail; the propagation below covers.
    with contextlib.suppress(Exception):
        ir_common.ShapeInferencePass(strict_mode=False, data_prop=False)(model)
    for node in iter_nodes(model.graph):
        schema = _schema(node, opsets)
        for i, out in enumerate(node.outputs):
            if out is None or out.dtype is not None:
                continue
            if node.op_type == "Cast" and "to" in node.attributes:
                out.dtype = ir.DataType(node.attributes["to"].as_int())
                continue
            if schema is None:
                continue
            var = formal_type(schema.outputs, i)
            if var is None:
                continue
            if var.startswith("tensor("):
                fixed = _dtype_of_type_str(var)
                if fixed is not None:
                    out.dtype = fixed
                continue
            for j, v in enumerate(node.inputs):
                if v is not None and v.dtype is not None and formal_type(schema.inputs, j) == var:
                    out.dtype = v.dtype
                    break


def _dtype_of_type_str(type_str: str) -> ir.DataType | None:
    name = type_str.removeprefix("tensor(").removesuffix(")").upper()
    try:
        return ir.DataType[name]
    except KeyError:
        return None


# ----------------------------------------------------------------------------------------------
# Rewriting


class _Rewriter:
    def __init__(self, model: ir.Model, plan: Plan, *, keep_io_types: bool) -> None:
        self.model = model
        self.plan = plan
        self.low = plan.low
        self.keep_io_types = keep_io_types
        self.new: dict[ir.Value, ir.DataType | None] = {}
        self.casts: dict[tuple[int, ir.Value, ir.DataType], ir.Value] = {}
        self.inserted = 0
        self.graph_of: dict[ir.Node, ir.Graph] = {}
        self._index_graphs(model.graph)
        # Names must be unique across the main graph and every subgraph (SSA covers them all).
        self.taken: set[str] = {v.name for v in model.graph.inputs if v.name}
        self.taken |= set(model.graph.initializers)
        for node in self.graph_of:
            self.taken |= {v.name for v in node.outputs if v is not None and v.name}
            self.taken |= {v.name for v in node.inputs if v is not None and v.name}
            if node.name:
                self.taken.add(node.name)
        for graph in {id(g): g for g in self.graph_of.values()}.values():
            self.taken |= {v.name for v in graph.inputs if v.name}

    def _unique(self, base: str) -> str:
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def _index_graphs(self, graph: ir.Graph) -> None:
        for node in graph:
            self.graph_of[node] = graph
            for g in subgraphs(node):
                self._index_graphs(g)

    # -- the dtype each value will have -----------------------------------------------------
    def _flexible(self, value: ir.Value) -> bool:
        """Constants and attribute-typed producers: converted only if every consumer wants it."""
        if _is_graph_input_initializer(value):
            return False
        if value.is_initializer() or (value.producer() is None and value.const_value is not None):
            return True
        p = value.producer()
        return p is not None and p.op_type in _ATTR_TYPED and p in self.plan.convert

    def _required(self, node: ir.Node, index: int, value: ir.Value) -> ir.DataType | None:
        """The dtype ``node`` needs at input ``index`` after the plan (None: whatever it has)."""
        orig = self.plan.orig.get(value, value.dtype)
        if orig != FLOAT:
            return None
        if node in self.plan.convert:
            if node.op_type == "Cast":
                return None
            schema = self.plan.schemas[node]
            var = formal_type(schema.inputs, index) if schema is not None else None
            if var in self.plan.low_vars.get(node, set()):
                return self.low
            return self._neutral(node, index, value, orig)
        if node in self.plan.stay or subgraphs(node):
            return orig
        return self._neutral(node, index, value, orig)

    def _neutral(self, node: ir.Node, index: int, value: ir.Value, orig: ir.DataType) -> ir.DataType:
        """An input not bound to a converted type: keep it low only if all inputs of its type
        variable are already low, the schema allows it, and every output is a tensor."""
        schema = self.plan.schemas.get(node)
        if schema is None:
            return orig
        var = formal_type(schema.inputs, index)
        if var is None or var.startswith("tensor("):
            return orig
        if _type_str(self.low) not in _constraints(schema).get(var, set()):
            return orig
        if any(o is not None and not isinstance(o.type, ir.TensorType) for o in node.outputs):
            return orig
        same = [
            v for j, v in enumerate(node.inputs) if v is not None and formal_type(schema.inputs, j) == var
        ]
        fixed = [v for v in same if not self._flexible(v)]
        if fixed and all(self.new.get(v) == self.low for v in fixed):
            return self.low
        return orig

    def _decide_flexible(self, nodes: list[ir.Node]) -> None:
        """Constants and attribute-typed nodes: low iff every consumer wants low."""
        values: list[ir.Value] = []
        seen: set[ir.Value] = set()
        for node in nodes:
            for v in node.inputs:
                if v is not None and v not in seen and self._flexible(v):
                    seen.add(v)
                    values.append(v)
        for v in values:
            if self.plan.orig.get(v, v.dtype) != FLOAT:
                continue
            votes = []
            for user, i in v.uses():
                if (user in self.plan.convert and user.op_type != "Cast") or user in self.plan.stay:
                    votes.append(self._required(user, i, v))
            low = bool(votes) and all(t == self.low for t in votes) and not v.is_graph_output()
            self.new[v] = self.low if low else FLOAT
            if not low:
                p = v.producer()
                if p is not None and p in self.plan.convert and p.op_type in _ATTR_TYPED:
                    self.plan.convert.discard(p)

    def run(self) -> int:
        plan = self.plan
        graph = self.model.graph
        nodes = list(iter_nodes(graph))
        for v in graph.inputs:
            if v.dtype == FLOAT and not self.keep_io_types:
                self.new[v] = self.low
        for node in nodes:
            if node in plan.convert and node.op_type not in _ATTR_TYPED:
                for i, out in enumerate(node.outputs):
                    schema = plan.schemas[node]
                    if (
                        out is not None
                        and out.dtype == FLOAT
                        and schema is not None
                        and formal_type(schema.outputs, i) in plan.low_vars.get(node, set())
                    ):
                        self.new[out] = self.low
        self._decide_flexible(nodes)
        # Rewrite the types of converted values and the attribute-typed nodes.
        for node in nodes:
            if node in plan.convert and node.op_type in _ATTR_TYPED:
                self._retype_attr_node(node)
        for value, dtype in list(self.new.items()):
            if dtype == self.low and value.dtype == FLOAT:
                self._set_dtype(value, dtype)
        # Casts where a consumer needs another dtype than the value now has.
        for node in nodes:
            for i, inp in enumerate(node.inputs):
                if inp is None:
                    continue
                need = self._required(node, i, inp)
                have = inp.dtype
                if need is None or have == need or have not in (FLOAT, self.low):
                    continue
                node.replace_input_with(i, self._cast(inp, need, node))
        self._fix_outputs(graph, top=True)
        for node in nodes:
            for g in subgraphs(node):
                self._fix_outputs(g, top=False)
        return self.inserted

    def _set_dtype(self, value: ir.Value, dtype: ir.DataType) -> None:
        if value.is_initializer() and value.const_value is not None:
            array = value.const_value.numpy()
            value.const_value = ir.tensor(_to_low(array, dtype), dtype=dtype, name=value.name)
        value.dtype = dtype

    def _retype_attr_node(self, node: ir.Node) -> None:
        out = node.outputs[0]
        if self.new.get(out) != self.low:
            return
        if node.op_type == "Cast":
            node.attributes["to"] = ir.AttrInt64("to", int(self.low))
        elif node.op_type in ("Constant", "ConstantOfShape"):
            attr = node.attributes.get("value")
            array = attr.as_tensor().numpy() if attr is not None else np.zeros(1, np.float32)
            node.attributes["value"] = ir.AttrTensor(
                "value", ir.tensor(_to_low(array, self.low), dtype=self.low)
            )

    def _cast(self, value: ir.Value, to: ir.DataType, consumer: ir.Node) -> ir.Value:
        graph = self.graph_of[consumer]
        key = (id(graph), value, to)
        if key in self.casts:
            return self.casts[key]
        out = ir.Value(
            name=self._unique(f"{value.name or 'value'}_to_{to.name.lower()}"),
            type=ir.TensorType(to),
            shape=value.shape,
        )
        cast = ir.Node(
            "",
            "Cast",
            [value],
            [ir.AttrInt64("to", int(to))],
            outputs=[out],
            name=self._unique(f"{value.name or 'value'}_cast_{to.name.lower()}"),
        )
        producer = value.producer()
        if producer is not None and self.graph_of.get(producer) is graph:
            graph.insert_after(producer, cast)
        else:
            graph.insert_before(graph[0], cast) if len(graph) else graph.append(cast)
        self.graph_of[cast] = graph
        self.casts[key] = out
        self.inserted += 1
        return out

    def _fix_outputs(self, graph: ir.Graph, *, top: bool) -> None:
        """Outputs keep their declared type (always for subgraphs, with keep_io_types at the top)."""
        if top and not self.keep_io_types:
            return
        for i, value in enumerate(list(graph.outputs)):
            orig = self.plan.orig.get(value, value.dtype)
            if orig != FLOAT or value.dtype == orig:
                continue
            name = value.name
            value.name = self._unique(f"{name}_{self.low.name.lower()}")
            out = ir.Value(name=name, type=ir.TensorType(orig), shape=value.shape)
            cast = ir.Node(
                "",
                "Cast",
                [value],
                [ir.AttrInt64("to", int(orig))],
                outputs=[out],
                name=self._unique(f"{name}_cast"),
            )
            graph.append(cast)
            graph.outputs[i] = out
            self.inserted += 1


def _to_low(array: np.ndarray, low: ir.DataType) -> np.ndarray:
    if low == ir.DataType.FLOAT16:
        return array.astype(np.float16)
    import ml_dtypes

    return array.astype(ml_dtypes.bfloat16)


def _is_cast(node: ir.Node) -> bool:
    return node.op_type == "Cast" and node.domain in ("", "ai.onnx") and "to" in node.attributes


def _dtype(value: ir.Value) -> ir.DataType | None:
    if value.dtype is not None:
        return value.dtype
    p = value.producer()
    return ir.DataType(p.attributes["to"].as_int()) if p is not None and _is_cast(p) else None


def remove_redundant_casts(model: ir.Model) -> int:
    """Remove exact no-op casts: ``Cast(to=T)(x: T)`` and ``Cast(to=T)(Cast(to=wider)(x: T))``."""
    removed = 0
    widening = {(ir.DataType.FLOAT16, FLOAT), (ir.DataType.BFLOAT16, FLOAT)}
    for node in list(iter_nodes(model.graph)):
        if not _is_cast(node):
            continue
        to = ir.DataType(node.attributes["to"].as_int())
        src = node.inputs[0]
        if src is None:
            continue
        replacement: ir.Value | None = None
        if _dtype(src) == to:
            replacement = src
        else:
            p = src.producer()
            if p is not None and _is_cast(p) and p.inputs[0] is not None:
                inner = p.inputs[0]
                if _dtype(inner) == to and (to, _dtype(src)) in widening:
                    replacement = inner
        if replacement is None:
            continue
        out = node.outputs[0]
        if out.is_graph_output():
            continue  # keep the graph's output names stable
        out.replace_all_uses_with(replacement)
        graph = node.graph
        if graph is not None:
            graph.remove(node, safe=True)
        removed += 1
    return removed

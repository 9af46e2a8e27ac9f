"""The `onnx` dialect: one xDSL op per ONNX operator, generated from the ONNX schemas.

Mirrors the ONNX operator spec (https://onnx.ai/onnx/operators/) at one canonical
opset, `CANONICAL_OPSET`; the importer converts every model to it first. As
onnx-mlir does, the op classes are generated from `onnx.defs` so attribute names
and types always match the spec: INT -> i64 IntegerAttr, FLOAT -> f32 FloatAttr,
STRING -> StringAttr, INTS/FLOATS -> DenseArrayBase, STRINGS -> ArrayAttr,
TENSOR -> DenseIntOrFPElementsAttr. Two ops are ours, not ONNX's:
`onnx.weight` names a weight kept outside the IR (see dialects/weights.py), and
`onnx.none` stands for an absent optional input.

    %w = onnx.weight @conv1.weight : tensor<64x3x7x7xf32>
    %y = "onnx.Conv"(%x, %w, %b) {pads = array<i64: 3, 3, 3, 3>, strides = array<i64: 2, 2>}
           : (tensor<1x3x224x224xf32>, tensor<64x3x7x7xf32>, tensor<64xf32>) -> tensor<1x64x112x112xf32>
"""

from __future__ import annotations

import keyword
from typing import ClassVar

import onnx
import onnx.defs
from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntegerAttr,
    NoneType,
    StringAttr,
    SymbolRefAttr,
    TensorType,
)
from xdsl.ir import Attribute, Dialect, Operation
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    opt_attr_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import Pure

# Every imported model is converted to this opset (onnx.version_converter) so
# that passes and lowerings see one signature per operator.
CANONICAL_OPSET = 21

# Ops whose results differ between runs: not Pure, never folded or CSE'd.
NONDETERMINISTIC = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform",
                              "RandomUniformLike", "Multinomial", "Bernoulli"})

_ATTR_TYPES: dict[int, type[Attribute]] = {
    onnx.AttributeProto.INT: IntegerAttr,
    onnx.AttributeProto.FLOAT: FloatAttr,
    onnx.AttributeProto.STRING: StringAttr,
    onnx.AttributeProto.INTS: DenseArrayBase,
    onnx.AttributeProto.FLOATS: DenseArrayBase,
    onnx.AttributeProto.STRINGS: ArrayAttr,
    onnx.AttributeProto.TENSOR: DenseIntOrFPElementsAttr,
}


class OnnxOp(IRDLOperation):
    """Base of the generated ONNX operator ops: variadic operands and results.

    `onnx_type` is the ONNX op type ("Conv"). Attributes are declared per op
    with their ONNX types.
    """

    ONNX_TYPE: ClassVar[str] = ""
    operands_ = var_operand_def()
    results_ = var_result_def()

    @property
    def onnx_type(self) -> str:
        return self.ONNX_TYPE

    def attr(self, name: str, default=None):
        """The Python value of ONNX attribute `name` (int, float, str, list) or `default`."""
        value = self.attributes.get(name)
        return default if value is None else attribute_value(value)

    @property
    def node_name(self) -> str:
        """The ONNX node name this op was imported from (for error messages)."""
        name = self.attributes.get("onnx_node_name")
        return name.data if isinstance(name, StringAttr) else ""

    def describe(self) -> str:
        """`node 'conv1' (Conv)`: how errors name an op."""
        return f"node '{self.node_name}' ({self.onnx_type})"


def attribute_value(value: Attribute):
    """Convert an attribute of an onnx op to a plain Python value."""
    if isinstance(value, IntegerAttr):
        return value.value.data
    if isinstance(value, FloatAttr):
        return value.value.data
    if isinstance(value, StringAttr):
        return value.data
    if isinstance(value, DenseArrayBase):
        return list(value.get_values())
    if isinstance(value, ArrayAttr):
        return [attribute_value(v) for v in value.data]
    return value


@irdl_op_definition
class WeightOp(IRDLOperation):
    """A weight stored outside the IR, named by symbol (see dialects/weights.py)."""

    name = "onnx.weight"
    weight = prop_def(SymbolRefAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$weight attr-dict `:` type($result)"

    def __init__(self, weight: str, type: TensorType):
        super().__init__(properties={"weight": SymbolRefAttr(weight)}, result_types=[type])

    @property
    def weight_name(self) -> str:
        return self.weight.root_reference.data


@irdl_op_definition
class NoneOp(IRDLOperation):
    """An absent optional ONNX input (ONNX writes it as an empty input name)."""

    name = "onnx.none"
    result = result_def(NoneType)
    traits = traits_def(Pure())
    assembly_format = "attr-dict"

    def __init__(self):
        super().__init__(result_types=[NoneType()])


def _python_field(attr_name: str) -> str:
    field = attr_name.replace(".", "_")
    return f"{field}_" if keyword.iskeyword(field) or field in dir(OnnxOp) else field


def _make_op(schema: onnx.defs.OpSchema) -> type[OnnxOp]:
    namespace: dict[str, object] = {
        "name": f"onnx.{schema.name}",
        "ONNX_TYPE": schema.name,
        "__doc__": f"ONNX {schema.name} (since opset {schema.since_version}): "
        f"https://onnx.ai/onnx/operators/onnx__{schema.name}.html",
        "__module__": __name__,
        "__annotations__": {"ONNX_TYPE": ClassVar[str]},
    }
    for attr_name, attr_schema in schema.attributes.items():
        attr_type = _ATTR_TYPES.get(attr_schema.type)
        if attr_type is not None:
            namespace[_python_field(attr_name)] = opt_attr_def(attr_type, attr_name=attr_name)
    if schema.name not in NONDETERMINISTIC:
        # Pure lets xDSL's dce and cse work on the graph phase.
        namespace["traits"] = traits_def(Pure())
    return irdl_op_definition(type(f"{schema.name}Op", (OnnxOp,), namespace))


def _generate_ops() -> dict[str, type[OnnxOp]]:
    ops = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain not in ("", "ai.onnx") or schema.name in ops:
            continue
        try:
            current = onnx.defs.get_schema(schema.name, CANONICAL_OPSET, "")
        except onnx.defs.SchemaError:
            continue  # removed before the canonical opset
        if current.deprecated:
            continue
        ops[schema.name] = _make_op(current)
    return ops


# ONNX op type ("Conv") -> generated op class.
OPS: dict[str, type[OnnxOp]] = _generate_ops()

ONNX = Dialect("onnx", [WeightOp, NoneOp, *OPS.values()], [])


def onnx_type_of(op: Operation) -> str | None:
    """The ONNX op type of an onnx-dialect operator op, else None."""
    return op.onnx_type if isinstance(op, OnnxOp) else None


# Ops that only reinterpret the shape of a contiguous buffer (or pass it through
# in inference): they compile to no kernel, just a view of their input's memory.
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})

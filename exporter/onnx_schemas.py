"""`onnx.defs.OpSchema` registrations for the `gptoss` domain, derived from the op signatures, so the ONNX checker
and shape inference know `SinkAttention` and `MoE` (docs/ops.md)."""

from __future__ import annotations

import onnx
from onnx.defs import OpSchema

from gptoss.runtime.contract import ELEMENT_TYPES
from gptoss.runtime.op_signatures import DOMAIN, PLUGIN_ATTRIBUTES, SIGNATURES, VERSION, OpSignature, TensorArg

_ATTRIBUTE_TYPES = {int: OpSchema.AttrType.INT, float: OpSchema.AttrType.FLOAT, str: OpSchema.AttrType.STRING}


def _parameter(tensor: TensorArg) -> OpSchema.FormalParameter:
    option = OpSchema.FormalParameterOption.Optional if tensor.optional else OpSchema.FormalParameterOption.Single
    single = ELEMENT_TYPES.get(tensor.types)  # else the name of a type constraint
    type_str = single.onnx_type_string if single else tensor.types
    return OpSchema.FormalParameter(tensor.name, type_str, tensor.doc, param_option=option)


def op_schema(signature: OpSignature) -> OpSchema:
    """The ONNX schema of one op: its inputs, outputs, attributes (defaults included) and the plugin attributes."""
    attributes = [
        OpSchema.Attribute(a.name, _ATTRIBUTE_TYPES[a.kind], a.doc, required=True)
        if a.default is None
        else OpSchema.Attribute(a.name, onnx.helper.make_attribute(a.name, a.default), a.doc)
        for a in signature.attributes
    ]
    attributes += [
        OpSchema.Attribute(name, OpSchema.AttrType.STRING, "TensorRT plugin lookup key", required=True)
        for name in PLUGIN_ATTRIBUTES
    ]
    return OpSchema(
        signature.name,
        DOMAIN,
        VERSION,
        doc=signature.doc,
        inputs=[_parameter(t) for t in signature.inputs],
        outputs=[_parameter(t) for t in signature.outputs],
        type_constraints=[
            (name, [ELEMENT_TYPES[t].onnx_type_string for t in types], f"{name} element types")
            for name, types in signature.type_constraints.items()
        ],
        attributes=attributes,
    )


def register_schemas() -> None:
    """Register every op's schema with `onnx.defs` (idempotent)."""
    for signature in SIGNATURES:
        schema = op_schema(signature)
        if not onnx.defs.has(schema.name, schema.since_version, schema.domain):
            onnx.defs.register_schema(schema)

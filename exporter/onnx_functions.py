"""Standard-ONNX definitions of the `gptoss` ops, stored in each exported model as local functions.

ONNX Runtime (and any ONNX consumer without the TensorRT plugins) inlines these, so it runs the very file the
engine builder takes. The bodies restate `ops.py` in ONNX operators and must stay equivalent to it. Each body
takes only the inputs and attributes it uses; `local_function` wraps it in a function with the op's whole
signature (`gptoss.runtime.op_signatures`). The MoE body depends on the weight format, so the exporter stores
the variant its model uses.
"""

from __future__ import annotations

import onnx_ir as ir

# onnxscript compiles these functions from their Python source: only ONNX operators inside them.
import onnxscript
from onnxscript import FLOAT, INT64, UINT8
from onnxscript import opset21 as op

from gptoss.runtime.op_signatures import DOMAIN, PLUGIN_ATTRIBUTES, VERSION, OpSignature

OPSET = onnxscript.values.Opset(DOMAIN, VERSION)
ONNX_OPSET = 21
_INT64_MAX = 9223372036854775807
_ATTRIBUTE_TYPES = {int: ir.AttributeType.INT, float: ir.AttributeType.FLOAT, str: ir.AttributeType.STRING}


def local_function(signature: OpSignature, body: onnxscript.OnnxFunction) -> ir.Function:
    """The model-local function `gptoss::<op>`: the op's inputs, outputs and attributes (the plugin attributes
    included), computed by one call of `body` with the inputs and attributes it names."""
    proto = body.to_function_proto()
    inputs = {t.name: ir.Value(name=t.name) for t in signature.inputs}
    kinds = {a.name: _ATTRIBUTE_TYPES[a.kind] for a in signature.attributes}
    call = ir.Node(
        proto.domain,
        proto.name,
        [inputs[name] for name in proto.input],
        attributes=[ir.RefAttr(name, name, kinds[name]) for name in proto.attribute],
        num_outputs=len(signature.outputs),
    )
    for value, output in zip(call.outputs, signature.outputs, strict=True):
        value.name = output.name
    graph = ir.Graph(
        list(inputs.values()), list(call.outputs), nodes=[call], opset_imports={"": ONNX_OPSET, DOMAIN: VERSION}
    )
    declared = [ir.Attr(name, ir.AttributeType.UNDEFINED, None) for name in [*kinds, *PLUGIN_ATTRIBUTES]]
    return ir.Function(DOMAIN, signature.name, graph=graph, attributes=declared)


@onnxscript.script(opset=OPSET, default_opset=op)
def SinkAttentionBody(  # noqa: N802  (ONNX function names are CamelCase)
    q,
    k,
    v,
    sinks,
    kv_cache,
    past_len,
    new_len,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    sliding_window: int,
    scale: float,
):
    zero = op.Constant(value_ints=[0])
    one = op.Constant(value_ints=[1])
    heads = op.Constant(value_int=num_heads)
    kv_heads = op.Constant(value_int=num_kv_heads)
    dim = op.Constant(value_int=head_dim)
    window = op.Constant(value_int=sliding_window)
    ring = op.Greater(window, op.Constant(value_int=0))
    ring_size = op.Max(window, op.Constant(value_int=1))
    group = op.Div(heads, kv_heads)

    batch = op.Shape(q, start=0, end=1)
    seq = op.Shape(q, start=1, end=2)
    capacity = op.Shape(kv_cache, start=3, end=4)
    kv_heads_1 = op.Reshape(kv_heads, one)
    group_1 = op.Reshape(group, one)
    dim_1 = op.Reshape(dim, one)

    # Positions: queries, new keys, and what each cache slot holds (-1 when empty).
    step = op.Range(op.Constant(value_int=0), op.Squeeze(seq), op.Constant(value_int=1))  # [S]
    past = op.Unsqueeze(op.Cast(past_len, to=INT64.dtype), one)  # [B,1]
    new = op.Unsqueeze(op.Cast(new_len, to=INT64.dtype), one)
    query_pos = op.Add(past, step)  # [B,S]
    new_valid = op.Less(step, new)
    slot = op.Range(op.Constant(value_int=0), op.Squeeze(capacity), op.Constant(value_int=1))  # [C]
    before = op.Sub(past, op.Constant(value_int=1))
    ring_pos = op.Sub(before, op.Mod(op.Sub(before, slot), ring_size))
    linear_pos = op.Add(slot, op.Mul(past, op.Constant(value_int=0)))
    cached_pos = op.Where(ring, ring_pos, linear_pos)
    cached_ok = op.And(op.GreaterOrEqual(cached_pos, op.Constant(value_int=0)), op.Less(cached_pos, past))
    minus_one = op.Constant(value_int=-1)
    cached_pos = op.Where(cached_ok, cached_pos, minus_one)
    key_pos = op.Unsqueeze(op.Concat(cached_pos, op.Where(new_valid, query_pos, minus_one), axis=1), one)  # [B,1,T]
    qpos = op.Unsqueeze(query_pos, op.Constant(value_ints=[2]))  # [B,S,1]
    allowed = op.And(op.GreaterOrEqual(key_pos, op.Constant(value_int=0)), op.LessOrEqual(key_pos, qpos))
    in_window = op.Or(op.Not(ring), op.Greater(key_pos, op.Sub(qpos, window)))
    allowed = op.And(op.And(allowed, in_window), op.Unsqueeze(new_valid, op.Constant(value_ints=[2])))

    # Scores per KV head and group: [B, Hkv, G, S, T].
    qh = op.Transpose(
        op.Reshape(op.Cast(q, to=FLOAT.dtype), op.Concat(batch, seq, kv_heads_1, group_1, dim_1, axis=0)),
        perm=[0, 2, 3, 1, 4],
    )
    new_shape = op.Concat(batch, seq, kv_heads_1, dim_1, axis=0)
    kh = op.Transpose(op.Reshape(k, new_shape), perm=[0, 2, 1, 3])  # [B,Hkv,S,D]
    vh = op.Transpose(op.Reshape(v, new_shape), perm=[0, 2, 1, 3])
    cached_k = op.Squeeze(op.Slice(kv_cache, zero, one, one), one)
    cached_v = op.Squeeze(op.Slice(kv_cache, one, op.Constant(value_ints=[2]), one), one)
    keys = op.Cast(op.Concat(op.CastLike(cached_k, kh), kh, axis=2), to=FLOAT.dtype)
    values = op.Cast(op.Concat(op.CastLike(cached_v, vh), vh, axis=2), to=FLOAT.dtype)
    keys_t = op.Unsqueeze(op.Transpose(keys, perm=[0, 1, 3, 2]), op.Constant(value_ints=[2]))
    scores = op.Mul(op.MatMul(qh, keys_t), op.Constant(value_float=scale))
    mask = op.Unsqueeze(allowed, op.Constant(value_ints=[1, 2]))
    scores = op.Where(mask, scores, op.Constant(value_float=float("-inf")))
    sink = op.Reshape(op.Cast(sinks, to=FLOAT.dtype), op.Concat(one, kv_heads_1, group_1, one, one, axis=0))
    sink = op.Expand(sink, op.Concat(batch, kv_heads_1, group_1, seq, one, axis=0))
    probs = op.Softmax(op.Concat(scores, sink, axis=-1), axis=-1)
    key_count = op.Shape(keys, start=2, end=3)
    probs = op.Slice(probs, zero, key_count, op.Constant(value_ints=[-1]))
    attended = op.MatMul(probs, op.Unsqueeze(values, op.Constant(value_ints=[2])))  # [B,Hkv,G,S,D]
    flat = op.Reshape(op.Mul(heads, dim), one)
    out = op.Reshape(op.Transpose(attended, perm=[0, 3, 1, 2, 4]), op.Concat(batch, seq, flat, axis=0))

    # Cache update: valid new tokens (the last W of them on ring layers) to their slots, the rest to a
    # scratch slot that is cut off again.
    keep = op.And(new_valid, op.Or(op.Not(ring), op.GreaterOrEqual(step, op.Sub(new, window))))
    write_slot = op.Where(ring, op.Mod(query_pos, ring_size), query_pos)
    write_slot = op.Where(keep, write_slot, op.Squeeze(capacity))
    two = op.Constant(value_ints=[2])
    scratch_shape = op.Concat(batch, two, kv_heads_1, one, dim_1, axis=0)
    scratch = op.Expand(op.CastLike(op.Constant(value_float=0.0), kv_cache), scratch_shape)
    padded = op.Concat(kv_cache, scratch, axis=3)
    index_shape = op.Concat(batch, two, kv_heads_1, seq, dim_1, axis=0)
    index = op.Expand(op.Reshape(write_slot, op.Concat(batch, one, one, seq, one, axis=0)), index_shape)
    updates = op.CastLike(op.Concat(op.Unsqueeze(kh, one), op.Unsqueeze(vh, one), axis=1), kv_cache)
    written = op.ScatterElements(padded, index, updates, axis=3)
    kv_cache_out = op.Slice(written, zero, capacity, op.Constant(value_ints=[3]))
    return op.CastLike(out, q), kv_cache_out


@onnxscript.script(opset=OPSET, default_opset=op)
def MoEExperts(  # noqa: N802
    hidden, expert_ids, expert_weights, experts, gate_up_w, gate_up_bias, down_w, down_bias, alpha: float, limit: float
):
    """Shared body of both MoE variants: a loop over the experts hit (`experts`, sorted ids), each applied to
    its own tokens. `gate_up_w [U,2I,H]` / `down_w [U,H,I]` are the float32 weights of those experts."""
    x = op.Cast(hidden, to=FLOAT.dtype)
    routed = op.Cast(expert_ids, to=INT64.dtype)
    gates = op.Cast(expert_weights, to=FLOAT.dtype)
    last = op.Constant(value_ints=[-1])
    big = op.Constant(value_ints=[_INT64_MAX])
    two = op.Constant(value_ints=[2])
    lim = op.Constant(value_float=limit)
    out = op.Expand(op.Constant(value_float=0.0), op.Shape(x))
    for i in range(op.Squeeze(op.Shape(experts))):
        picked = op.NonZero(op.Equal(routed, op.Gather(experts, i)))  # [2, N]: token and slot of each pick
        tokens = op.Gather(picked, op.Constant(value_int=0), axis=0)
        u = op.MatMul(op.Gather(x, tokens, axis=0), op.Transpose(op.Gather(gate_up_w, i, axis=0)))
        u = op.Add(u, op.Gather(op.Cast(gate_up_bias, to=FLOAT.dtype), op.Gather(experts, i), axis=0))
        gate = op.Min(op.Slice(u, op.Constant(value_ints=[0]), big, last, two), lim)
        up = op.Clip(op.Slice(u, op.Constant(value_ints=[1]), big, last, two), op.Neg(lim), lim)
        glu = op.Mul(gate, op.Sigmoid(op.Mul(gate, op.Constant(value_float=alpha))))
        h = op.Mul(glu, op.Add(up, op.Constant(value_float=1.0)))
        y = op.MatMul(h, op.Transpose(op.Gather(down_w, i, axis=0)))
        y = op.Add(y, op.Gather(op.Cast(down_bias, to=FLOAT.dtype), op.Gather(experts, i), axis=0))
        weight = op.Unsqueeze(op.GatherND(gates, op.Transpose(picked)), last)
        out = op.ScatterND(out, op.Unsqueeze(tokens, last), op.Mul(y, weight), reduction="add")
    return op.CastLike(out, hidden)


@onnxscript.script(opset=OPSET, default_opset=op)
def DequantizeMXFP4(blocks, scales):  # noqa: N802
    """`blocks [..., G, 16]` uint8 and `scales [..., G]` uint8 to float32 `[..., G*32]` (exact)."""
    lut = op.Constant(
        value_floats=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
    )
    low_bits = op.BitwiseAnd(blocks, op.Cast(op.Constant(value_int=15), to=UINT8.dtype))
    high_bits = op.BitShift(blocks, op.Cast(op.Constant(value_int=4), to=UINT8.dtype), direction="RIGHT")
    low = op.Gather(lut, op.Cast(low_bits, to=INT64.dtype), axis=0)
    high = op.Gather(lut, op.Cast(high_bits, to=INT64.dtype), axis=0)
    last = op.Constant(value_ints=[-1])
    pairs = op.Concat(op.Unsqueeze(low, last), op.Unsqueeze(high, last), axis=-1)  # [..., G, 16, 2]
    values = op.Reshape(pairs, op.Concat(op.Shape(scales), op.Constant(value_ints=[32]), axis=0))
    # 2^(s-127): a power of two raised to an integer exponent, exact in float32 (2^128 is inf).
    exponent = op.Sub(op.Cast(scales, to=FLOAT.dtype), op.Constant(value_float=127.0))
    scale = op.Pow(op.Constant(value_float=2.0), exponent)
    values = op.Mul(values, op.Unsqueeze(scale, last))
    return op.Reshape(values, op.Concat(op.Shape(scales, start=0, end=-1), last, axis=0))


@onnxscript.script(opset=OPSET, default_opset=op)
def MoEMxfp4Body(  # noqa: N802
    hidden,
    expert_ids,
    expert_weights,
    gate_up_weight,
    gate_up_scales,
    gate_up_bias,
    down_weight,
    down_scales,
    down_bias,
    swiglu_alpha: float,
    swiglu_limit: float,
):
    experts = op.Unique(op.Reshape(op.Cast(expert_ids, to=INT64.dtype), op.Constant(value_ints=[-1])))
    gate_up_w = DequantizeMXFP4(op.Gather(gate_up_weight, experts, axis=0), op.Gather(gate_up_scales, experts, axis=0))
    down_w = DequantizeMXFP4(op.Gather(down_weight, experts, axis=0), op.Gather(down_scales, experts, axis=0))
    return MoEExperts(
        hidden, expert_ids, expert_weights, experts, gate_up_w, gate_up_bias, down_w, down_bias,
        alpha=swiglu_alpha, limit=swiglu_limit,
    )  # fmt: skip


@onnxscript.script(opset=OPSET, default_opset=op)
def MoEFloatBody(  # noqa: N802
    hidden, expert_ids, expert_weights, gate_up_weight, gate_up_bias, down_weight, down_bias, swiglu_alpha: float,
    swiglu_limit: float,
):  # fmt: skip
    experts = op.Unique(op.Reshape(op.Cast(expert_ids, to=INT64.dtype), op.Constant(value_ints=[-1])))
    gate_up_w = op.Cast(op.Gather(gate_up_weight, experts, axis=0), to=FLOAT.dtype)
    down_w = op.Cast(op.Gather(down_weight, experts, axis=0), to=FLOAT.dtype)
    return MoEExperts(
        hidden, expert_ids, expert_weights, experts, gate_up_w, gate_up_bias, down_w, down_bias,
        alpha=swiglu_alpha, limit=swiglu_limit,
    )  # fmt: skip

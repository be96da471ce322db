"""Instantiate a traced template's decoder layers for every layer of the model.

GPT-OSS layers differ only in their attention window, so tracing one layer of each kind is enough: this module
turns the graph of a template model (one layer per kind) into the graph of the whole model by cloning the nodes
of the matching template layer for each layer, with that layer's weights and KV cache. The exported nodes carry
the module path they came from (`pkg.torch.onnx.name_scopes`), which says which layer a node belongs to; the only
values that cross a layer's boundary are its hidden state, its cache, its weights, the step's shared values
(positions, cos/sin, lengths) and constants the tracer shares between layers.
"""

from __future__ import annotations

import ast

import onnx_ir as ir

from .errors import GptOssError
from .model import STEP_GRAPH_PREFIX

_LAYERS = STEP_GRAPH_PREFIX + "model.layers."
_EMBEDDING = STEP_GRAPH_PREFIX + "model.embed_tokens"
_STEP_INPUTS = 3  # input_ids, past_len, new_len come before the caches; the head's output before theirs


def _scopes(node: ir.Node) -> list[str]:
    raw = node.metadata_props.get("pkg.torch.onnx.name_scopes")
    return ast.literal_eval(raw) if raw else []


def _layer(node: ir.Node) -> int | None:
    """The decoder layer a node was traced in; None outside the layers and for constants (shared by layers)."""
    if node.op_type == "Constant":
        return None
    return next((int(s[len(_LAYERS) :].split(".")[0]) for s in _scopes(node) if s.startswith(_LAYERS)), None)


class _Template:
    """One traced layer: its nodes, and the values it takes from and gives to the rest of the graph."""

    def __init__(self, graph: ir.Graph, index: int, nodes: list[ir.Node], hidden_in: ir.Value) -> None:
        self.index, self.nodes, self.hidden_in = index, nodes, hidden_in
        self.cache_in = graph.inputs[_STEP_INPUTS + index]
        self.cache_out = graph.outputs[1 + index]
        inside = set(nodes)
        leaving = [
            value
            for node in nodes
            for value in node.outputs
            if value is not self.cache_out and any(use.node not in inside for use in value.uses())
        ]
        if len(leaving) != 1:
            raise GptOssError(f"layer {index} of the traced template gives {len(leaving)} values to the rest, not 1")
        self.hidden_out = leaving[0]
        prefix = f"{_LAYERS}{index}."
        self.weights = {name: value for name, value in graph.initializers.items() if name.startswith(prefix)}

    def weight_suffix(self, name: str) -> str:
        return name[len(f"{_LAYERS}{self.index}.") :]


def instantiate_layers(graph: ir.Graph, template_of: list[int]) -> None:
    """Make `graph`, traced from a template model, the graph of a model whose layer `i` is like template layer
    `template_of[i]`: layer `i` gets the weights `...layers.{i}.*` (placeholders with the template's type and
    shape) and the i-th cache input and output."""
    nodes = list(graph)
    by_layer: dict[int, list[ir.Node]] = {}
    for node in nodes:
        if (layer := _layer(node)) is not None:
            by_layer.setdefault(layer, []).append(node)
    embedding = [node for node in nodes if _EMBEDDING in _scopes(node)]
    templates: list[_Template] = []
    hidden = embedding[-1].outputs[0]
    for index in range(len(by_layer)):
        templates.append(_Template(graph, index, by_layer[index], hidden))
        hidden = templates[-1].hidden_out
    last = templates[-1]
    after = [(use.node, use.idx) for use in last.hidden_out.uses() if use.node not in set(last.nodes)]
    anchor = next(node for node in nodes[nodes.index(last.nodes[-1]) + 1 :] if _layer(node) is None)

    for template in templates:
        graph.remove(template.nodes, safe=False)
        for name in template.weights:
            graph.initializers.pop(name)
    caches_in, caches_out, hidden = [], [], templates[0].hidden_in
    for layer, index in enumerate(template_of):
        template = templates[index]
        cache = ir.Value(name=f"kv_cache_{layer}", type=template.cache_in.type, shape=template.cache_in.shape)
        mapping = {template.hidden_in: hidden, template.cache_in: cache}
        for name, value in template.weights.items():
            weight = ir.Value(
                name=f"{_LAYERS}{layer}.{template.weight_suffix(name)}", type=value.type, shape=value.shape,
                const_value=value.const_value,
            )  # fmt: skip
            graph.register_initializer(weight)
            mapping[value] = weight
        graph.insert_before(anchor, [_clone(node, mapping, f"_L{layer}") for node in template.nodes])
        caches_in.append(cache)
        caches_out.append(mapping[template.cache_out])
        hidden = mapping[template.hidden_out]
    for node, index in after:
        node.replace_input_with(index, hidden)
    del graph.inputs[_STEP_INPUTS:]
    graph.inputs.extend(caches_in)
    del graph.outputs[1:]
    graph.outputs.extend(caches_out)


def _clone(node: ir.Node, mapping: dict[ir.Value, ir.Value], suffix: str) -> ir.Node:
    """A copy of `node` reading `mapping[x]` for each input x it maps; its outputs are added to `mapping`."""
    clone = ir.Node(
        node.domain,
        node.op_type,
        [None if value is None else mapping.get(value, value) for value in node.inputs],
        attributes=list(node.attributes.values()),
        overload=node.overload,
        num_outputs=len(node.outputs),
        version=node.version,
        name=f"{node.name}{suffix}",
        metadata_props=dict(node.metadata_props),
    )
    for old, new in zip(node.outputs, clone.outputs, strict=True):
        new.name, new.type, new.shape = f"{old.name}{suffix}", old.type, old.shape
        mapping[old] = new
    return clone

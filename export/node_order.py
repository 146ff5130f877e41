"""Node order in the exported graph, for what ONNX Runtime keeps alive.

ONNX Runtime's default execution order is a depth-first walk back from the graph's outputs,
taking a node's inputs highest node index first. `attn_mass` stacks one mass per layer, and
each mass reads that layer's softmax numerator ([Hkv, G*c, B + c]). As traced, the walk
reaches the last layer's mass first, through the whole network, and every earlier mass after
it: all the numerators stay alive to the end (SmolLM2, a 64-token chunk at budget 2048: 30 x
4.5 MiB; prefill peak 559 MiB). `schedule_attn_mass` moves the nodes that only feed
`attn_mass` to the end of the graph, the first layer's last. The walk then reaches layer l's
mass right after layer l's softmax (prefill peak 419 MiB, decode unchanged; docs/bench.md).
"""

from __future__ import annotations

import onnx


def schedule_attn_mass(model: onnx.ModelProto, output: str = "attn_mass") -> bool:
    """Reorder `model`'s nodes in place as above; returns False (and leaves the graph as it
    was) where the graph does not have that shape."""
    nodes = list(model.graph.node)
    producer = {name: i for i, node in enumerate(nodes) for name in node.output}
    if output not in producer:
        return False

    def ancestors(names: list[str]) -> set[int]:
        seen: set[int] = set()
        todo = [producer[n] for n in names if n in producer]
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo += [producer[n] for n in nodes[i].input if n in producer]
        return seen

    stack = producer[output]
    others = ancestors([o.name for o in model.graph.output if o.name != output])
    only_mass = ancestors([output]) - others - {stack}
    rest = [i for i in range(len(nodes)) if i not in only_mass and i != stack]
    made = {name for i in only_mass for name in nodes[i].output}
    if any(name in made for i in rest for name in nodes[i].input):
        return False  # something else reads a mass-only value: keep the traced order
    tail: list[int] = []
    for name in reversed(nodes[stack].input):  # the last layer's part first
        part = sorted((ancestors([name]) & only_mass) - set(tail))
        tail += part  # a node shared by several layers goes with the first part placed
    tail += sorted(only_mass - set(tail))
    del model.graph.node[:]
    model.graph.node.extend(nodes[i] for i in rest + tail + [stack])
    return True

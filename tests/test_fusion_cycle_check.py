"""fuse-kernels' cycle check searches only below the target in a topological order that it
keeps through merges (passes/fusion/fuse_kernels.py): same answers as a search of the whole
graph, and the order stays topological, on random graphs."""

from __future__ import annotations

import random

import networkx as nx
import pytest

from passes.fusion.fuse_kernels import _creates_cycle, _merge_ranks


def _whole_graph_answer(graph: nx.DiGraph, a: int, b: int) -> bool:
    return any(succ != dst and nx.has_path(graph, succ, dst)
               for src, dst in ((a, b), (b, a)) for succ in graph.successors(src))


@pytest.mark.parametrize("seed", range(12))
def test_cycle_check_and_ranks_through_random_merges(seed):
    rng = random.Random(seed)
    nodes = 60
    graph = nx.DiGraph()
    graph.add_nodes_from(range(nodes))
    for target in range(1, nodes):  # edges go forward: a DAG whose node numbers are a topological order
        for source in rng.sample(range(target), min(target, rng.randint(1, 3))):
            if rng.random() < 0.7 or target - source < 4:
                graph.add_edge(source, target)
    rank = {node: node for node in graph}
    merges = refused = 0
    for _ in range(200):
        a, b = rng.choice(list(graph.edges))
        cycle = _creates_cycle(graph, rank, a, b)
        assert cycle == _whole_graph_answer(graph, a, b)
        assert _creates_cycle(graph, rank, b, a) == cycle
        if cycle:
            refused += 1
            continue
        _merge_ranks(graph, rank, a, b)
        nx.contracted_nodes(graph, a, b, self_loops=False, copy=False)
        merges += 1
        assert set(rank) == set(graph)
        assert all(rank[u] < rank[v] for u, v in graph.edges), "rank is no longer a topological order"
        if graph.number_of_edges() == 0:
            break
    assert merges and refused, "the graphs exercise both answers"

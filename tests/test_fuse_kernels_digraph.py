"""fuse-kernels' own digraph (passes/fusion/fuse_kernels.py `_Digraph`, which replaced networkx
to save its import in every compile) answers as networkx.DiGraph does, on random graphs:
edges after contractions, the cycle check and ranks kept through merges, and the
lexicographical topological order."""

from __future__ import annotations

import random

import networkx as nx
import pytest

from passes.fusion.fuse_kernels import _creates_cycle, _Digraph, _merge_ranks


def _random_dag(rng: random.Random, nodes: int) -> list[tuple[int, int]]:
    return [(source, target) for target in range(1, nodes)
            for source in rng.sample(range(target), min(target, rng.randint(1, 3)))]


def _edges(graph) -> set[tuple[int, int]]:
    return {(a, b) for a in range(200) if a in graph._succ for b in graph.successors(a)} \
        if isinstance(graph, _Digraph) else set(graph.edges)


@pytest.mark.parametrize("seed", range(8))
def test_contractions_and_cycle_checks_match_networkx(seed):
    rng = random.Random(seed)
    edges = _random_dag(rng, 50)
    ours, theirs = _Digraph(), nx.DiGraph()
    for node in range(50):
        ours.add_node(node)
        theirs.add_node(node)
    for a, b in edges:
        ours.add_edge(a, b)
        theirs.add_edge(a, b)
    rank_ours, rank_theirs = {n: n for n in range(50)}, {n: n for n in range(50)}
    for _ in range(120):
        a, b = rng.choice(sorted(theirs.edges))
        cycle = _creates_cycle(theirs, rank_theirs, a, b)
        assert _creates_cycle(ours, rank_ours, a, b) == cycle
        if cycle:
            continue
        _merge_ranks(ours, rank_ours, a, b)
        _merge_ranks(theirs, rank_theirs, a, b)
        ours.contract(a, b)
        nx.contracted_nodes(theirs, a, b, self_loops=False, copy=False)
        assert rank_ours == rank_theirs
        assert _edges(ours) == _edges(theirs)
        assert all(set(ours.predecessors(n)) == set(theirs.predecessors(n)) for n in theirs)
        if theirs.number_of_edges() == 0:
            break


@pytest.mark.parametrize("seed", range(8))
def test_topological_order_matches_networkx(seed):
    rng = random.Random(seed)
    nodes = list(range(40))
    rng.shuffle(nodes)  # insertion order apart from the keys
    key = {node: rng.random() for node in nodes}
    ours, theirs = _Digraph(), nx.DiGraph()
    for node in nodes:
        ours.add_node(node)
        theirs.add_node(node)
    for a, b in _random_dag(rng, 40):
        ours.add_edge(a, b)
        theirs.add_edge(a, b)
    assert ours.topological_order(key.__getitem__) == \
        list(nx.lexicographical_topological_sort(theirs, key=key.__getitem__))


def test_a_cycle_is_an_error():
    graph = _Digraph()
    graph.add_edge(0, 1)
    graph.add_edge(1, 0)
    with pytest.raises(ValueError, match="cycle"):
        graph.topological_order(lambda node: node)

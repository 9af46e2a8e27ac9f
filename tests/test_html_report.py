"""`dlc compare --html`: the page shows both graphs, one colour per kernel, timings and decisions."""

from __future__ import annotations

import re
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dlc.tools.fusion_report import compare
from dlc.tools.html_report import layered_layout, render_html

CNN = Path(__file__).parent.parent / "examples" / "models" / "cnn.onnx"


class Shapes(HTMLParser):
    """Per graph svg: the (kernel, fill) of each node; and the classes of every element."""

    def __init__(self):
        super().__init__()
        self.graphs: dict[str, list[tuple[str, str]]] = {}
        self.classes: list[str] = []
        self._svg = self._kernel = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.classes.extend((attrs.get("class") or "").split())
        if tag == "svg" and "graph" in (attrs.get("class") or ""):
            self._svg = attrs["id"]
            self.graphs[self._svg] = []
        elif tag == "g" and attrs.get("class") == "node":
            self._kernel = attrs["data-kernel"]
        elif tag == "rect" and self._kernel is not None:
            self.graphs[self._svg].append((self._kernel, attrs["fill"]))
            self._kernel = None


def parse(page: str) -> Shapes:
    shapes = Shapes()
    shapes.feed(page)
    return shapes


@pytest.fixture(scope="module")
def cnn_page():
    reports, errors = compare(CNN, repeat=2, with_onnxruntime=False)
    return reports, render_html(CNN, reports, errors)


def test_both_graphs_and_every_node_name(cnn_page):
    reports, page = cnn_page
    graphs = parse(page).graphs
    assert set(graphs) == {"graph-unfused", "graph-fused"}
    assert page.count("<svg") == 2
    for node in onnx.load(str(CNN)).graph.node:  # folded BatchNormalization nodes are listed too
        assert escape(node.name) in page, node.name
    for label, nodes in graphs.items():
        build = next(r for r in reports if f"graph-{r.label}" == label)
        assert len(nodes) == len(build.nodes)


def test_one_colour_per_kernel(cnn_page):
    reports, page = cnn_page
    graphs = parse(page).graphs
    for build in reports[:2]:
        drawn = [(kernel, fill) for kernel, fill in graphs[f"graph-{build.label}"] if kernel]
        kernels = {kernel for kernel, _ in drawn}
        assert kernels == {k.name for k in build.kernels}
        assert len({fill for _, fill in drawn}) == len(build.kernels)
        # Nodes of one kernel share its colour.
        assert all(len({f for k, f in drawn if k == kernel}) == 1 for kernel in kernels)
    fused = reports[1]
    assert len(fused.kernels) < len(reports[0].kernels)  # else the test proves nothing about fusion


def test_decision_table_has_every_kernel_and_apart_reason(cnn_page):
    reports, page = cnn_page
    fused = reports[1]
    table = page[page.index('id="decisions"'):]
    assert table.count('<tr class="decision">') == len(fused.kernels)
    reasons = [reason for k in fused.kernels for reason in k.apart]
    assert reasons, "the example CNN keeps some neighbours apart"
    for reason in reasons:
        assert escape(reason) in table


def test_timing_bars_for_every_fused_kernel(cnn_page):
    reports, page = cnn_page
    fused = reports[1]
    assert all(k.ms_per_run is not None and k.ms_per_run >= 0 for k in fused.kernels)
    timings = page[page.index('id="timings"'):page.index('id="decisions"')]
    # One row per fused kernel, plus rows for unfused kernels of nodes the fused build folded
    # away (--fusion=none keeps BatchNormalization as kernels of its own).
    assert timings.count('class="timing-row"') >= len(fused.kernels)
    assert timings.count('class="bar fused"') == len(fused.kernels)
    # Both builds share one scale: the slowest kernel (or group of unfused kernels) is the full width.
    widths = [float(w) for w in re.findall(r'class="bar (?:un)?fused" style="width:([0-9.]+)%"', timings)]
    assert len(widths) >= 2 * len(fused.kernels)
    assert max(widths) == pytest.approx(100.0)
    assert "GFLOP/s" in timings


def test_no_external_resources(cnn_page):
    _, page = cnn_page
    assert "http" not in page
    assert "src=" not in page
    assert "<script" not in page and "@import" not in page


def test_special_characters_are_escaped():
    name = 'a<b&"c"'
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    bias = numpy_helper.from_array(np.ones((2, 3), np.float32), "bias")
    graph = helper.make_graph([helper.make_node("Add", ["x", "bias"], ["t"], name=name),
                               helper.make_node("Relu", ["t"], ["y"], name="relu")],
                              "escape<me>", [x], [y], [bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    reports, errors = compare(model, repeat=1, with_onnxruntime=False)
    page = render_html(model, reports, errors)
    assert name not in page
    assert escape(name) in page
    assert "escape&lt;me&gt;" in page
    assert sum(len(nodes) for nodes in parse(page).graphs.values()) == 4


def test_layout_layers_follow_the_longest_path():
    # 0 -> 1 -> 2 -> 3 and a skip 0 -> 3: node 3 sits below 2, the skip gets lanes beside 1 and 2.
    layout = layered_layout(4, [(0, 1), (1, 2), (2, 3), (0, 3)])
    assert [layout.position[n][0] for n in range(4)] == [0, 1, 2, 3]
    lane = layout.lanes[(0, 3)]
    assert [layer for layer, _ in lane] == [1, 2]
    assert all(x != layout.position[n][1] for (_, x), n in zip(lane, (1, 2)))
    assert layout.lanes[(0, 1)] == []
    assert layered_layout(4, [(0, 1), (1, 2), (2, 3), (0, 3)]) == layout

"""`dlc compare --html`: one self-contained page comparing the unfused and fused builds.

The summary table, both kernel graphs as inline SVG (layered top to bottom), per-kernel
timing bars from profiled runs, and the fusion decisions; no scripts, no external resources.
"""

from __future__ import annotations

import datetime
import platform
from collections import Counter, defaultdict
from dataclasses import dataclass
from html import escape
from itertools import pairwise
from pathlib import Path

from dlc.tools.fusion_report import SUMMARY_COLUMNS, BuildReport, GraphNode, error_lines, summary_rows

NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 150, 30, 14, 26, 10
OUTSIDE_FILL = "#eeeeee"  # nodes no kernel runs (views)

CSS = """
body { font: 13px system-ui, sans-serif; margin: 16px 24px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.meta { color: #555; margin-bottom: 12px; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.errors { margin: 8px 0 0; padding-left: 18px; color: #444; }
.legend { color: #555; margin: 0 0 6px; }
.graphs { display: flex; gap: 28px; overflow: auto; max-height: 80vh; border: 1px solid #ccc;
          padding: 8px; background: #fcfcfc; }
.graphs figure { margin: 0; flex: none; }
.graphs figcaption { font-weight: 600; margin-bottom: 4px; position: sticky; left: 0; }
svg.graph text { font: 9px ui-monospace, monospace; fill: #111; }
svg.graph text.op { font-weight: 700; font-size: 10px; }
.timing td { padding: 2px 8px; border-bottom: 1px solid #eee; }
.barline { display: flex; align-items: center; gap: 8px; height: 15px; }
.track { width: 420px; flex: none; }
.bar { height: 10px; border-radius: 2px; min-width: 1px; }
.bar.fused { background: #3b7dd8; } .bar.unfused { background: #c9a227; }
.barlabel { font-size: 11px; color: #444; white-space: nowrap; }
.key { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 2px; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #888;
          vertical-align: -2px; margin-right: 6px; }
.decisions td { font-size: 12px; } .decisions ul { margin: 0; padding-left: 16px; }
.apart { color: #8a3b12; }
"""


def write_html_report(path, model, reports: list[BuildReport], errors: dict) -> None:
    Path(path).write_text(render_html(model, reports, errors), encoding="utf-8")


def render_html(model, reports: list[BuildReport], errors: dict) -> str:
    builds = [r for r in reports if r.kernels]  # unfused and fused; onnxruntime has no kernels
    name = _model_name(model)
    body = [_header(name, reports), _summary(reports, errors), _graphs(builds, _removed_nodes(model, builds)),
            _timings(builds), _decisions(builds)]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>dlc compare: {escape(name)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# ----------------------------------------------------------------------------- header and summary

def _model_name(model) -> str:
    if isinstance(model, (str, Path)):
        return Path(model).name
    return getattr(getattr(model, "graph", None), "name", "") or "model"


def _machine() -> str:
    """The CPU's marketing name where the OS tells it (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _header(name: str, reports: list[BuildReport]) -> str:
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    threads = reports[0].threads if reports else 1
    return (f'<h1>dlc compare: {escape(name)}</h1>\n<div class="meta">{escape(date)} &middot; '
            f"{escape(_machine())} &middot; {threads} thread(s)</div>")


def _summary(reports: list[BuildReport], errors: dict) -> str:
    def row(cells, tag):
        first, *rest = (escape(c) for c in cells)
        return (f"<tr><{tag}>{first}</{tag}>" + "".join(f'<{tag} class="num">{c}</{tag}>' for c in rest)
                + "</tr>")

    rows = [row(SUMMARY_COLUMNS, "th"), *(row(cells, "td") for cells in summary_rows(reports))]
    items = "".join(f"<li>{escape(line)}</li>" for line in error_lines(errors))
    return f'<table class="summary">{"".join(rows)}</table>\n<ul class="errors">{items}</ul>'


# ----------------------------------------------------------------------------- graphs

@dataclass
class Layout:
    position: dict[int, tuple[int, float]]  # node -> (layer, slot)
    lanes: dict[tuple[int, int], list[tuple[int, float]]]  # edge -> the (layer, slot)s it passes


def layered_layout(count: int, edges: list[tuple[int, int]]) -> Layout:
    """Longest-path layers, each ordered by the barycenter of its parents (Sugiyama, simplified).

    An edge that spans several layers gets a lane (a dummy node) in each layer it crosses, so it
    runs beside the nodes rather than through them. Slots are centred on 0 so that narrow layers
    sit under the middle of wide ones; ties keep node order, so the layout is deterministic.
    """
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(range(count))
    graph.add_edges_from(edges)
    layer = {}
    for node in nx.lexicographical_topological_sort(graph):
        layer[node] = max((layer[p] + 1 for p in graph.predecessors(node)), default=0)
    routed = nx.DiGraph()
    routed.add_nodes_from(range(count))
    chains = {}
    for source, target in edges:
        dummies = list(range(len(layer), len(layer) + layer[target] - layer[source] - 1))
        layer.update({d: layer[source] + 1 + i for i, d in enumerate(dummies)})
        chain = [source, *dummies, target]
        routed.add_edges_from(pairwise(chain))
        chains[(source, target)] = dummies
    rows = defaultdict(list)
    for node in sorted(layer):
        rows[layer[node]].append(node)
    position = {}
    for depth in sorted(rows):
        def barycenter(node):
            xs = [position[p][1] for p in routed.predecessors(node)]
            return (sum(xs) / len(xs) if xs else 0.0, node)

        ordered = sorted(rows[depth], key=barycenter)
        for slot, node in enumerate(ordered):
            position[node] = (depth, slot - (len(ordered) - 1) / 2)
    return Layout({n: position[n] for n in range(count)},
                  {edge: [position[d] for d in dummies] for edge, dummies in chains.items()})


def kernel_colours(kernels: list[str]) -> dict[str, str]:
    """One colour per kernel: hues a golden angle apart, so neighbouring kernels differ."""
    return {name: f"hsl({i * 137.508 % 360:.1f}, 62%, {74 + 8 * (i % 2)}%)" for i, name in enumerate(kernels)}


def _short(text: str, limit: int = 27) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def graph_svg(report: BuildReport, svg_id: str) -> str:
    """The build's ONNX nodes coloured by kernel; thick edges stay inside a kernel, thin ones go
    through memory."""
    layout = layered_layout(len(report.nodes), report.edges)
    spots = [*layout.position.values(), *(spot for lane in layout.lanes.values() for spot in lane)]
    min_x = min((x for _, x in spots), default=0.0)
    width = max((x for _, x in spots), default=0.0) - min_x + 1
    depth = max((layer for layer, _ in spots), default=-1) + 1

    def corner(spot):
        layer, x = spot
        return MARGIN + (x - min_x) * (NODE_W + GAP_X), MARGIN + layer * (NODE_H + GAP_Y)

    def centre(spot):  # where an edge enters (top) and leaves (bottom) a node or lane
        x, y = corner(spot)
        return [(x + NODE_W / 2, y), (x + NODE_W / 2, y + NODE_H)]

    colour = kernel_colours([k.name for k in report.kernels])
    parts = [(f'<defs><marker id="{svg_id}-arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" '
              'markerHeight="7" markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L8,4 L0,8 z" '
              'fill="#555"/></marker></defs>')]
    for (source, target), lane in layout.lanes.items():
        points = [centre(layout.position[source])[1], *(p for spot in lane for p in centre(spot)),
                  centre(layout.position[target])[0]]
        inside = report.nodes[source].kernel is not None and \
            report.nodes[source].kernel == report.nodes[target].kernel
        parts.append(_edge(points, inside, svg_id))
    for index, node in enumerate(report.nodes):
        parts.append(_node(node, corner(layout.position[index]), colour.get(node.kernel, OUTSIDE_FILL)))
    w = int(2 * MARGIN + width * (NODE_W + GAP_X) - GAP_X)
    h = int(2 * MARGIN + depth * (NODE_H + GAP_Y) - GAP_Y)
    return (f'<svg class="graph" id="{svg_id}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'role="img">{"".join(parts)}</svg>')


def _edge(points: list[tuple[float, float]], inside: bool, svg_id: str) -> str:
    """Curves between rows, straight through the lanes of the rows an edge crosses."""
    bend = GAP_Y * 0.8
    path = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    for i, ((x0, y0), (x1, y1)) in enumerate(pairwise(points)):
        path.append(f"C{x0:.1f},{y0 + bend:.1f} {x1:.1f},{y1 - bend:.1f} {x1:.1f},{y1:.1f}" if i % 2 == 0
                    else f"L{x1:.1f},{y1:.1f}")
    style = 'stroke="#333" stroke-width="2.2"' if inside else 'stroke="#999" stroke-width="1"'
    return f'<path d="{" ".join(path)}" fill="none" {style} marker-end="url(#{svg_id}-arrow)"/>'


def _node(node: GraphNode, corner, fill: str) -> str:
    x, y = corner
    where = f"kernel {node.kernel}" if node.kernel else "outside kernels (a view: no copy)"
    dash = '' if node.kernel else ' stroke-dasharray="3,2"'
    return (f'<g class="node" data-kernel="{escape(node.kernel or "")}">'
            f"<title>{escape(f'{node.name} ({node.op_type}) - {where}')}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="4" '
            f'fill="{fill}" stroke="#666"{dash}/>'
            f'<text class="op" x="{x + 5:.1f}" y="{y + 12:.1f}">{escape(node.op_type)}</text>'
            f'<text x="{x + 5:.1f}" y="{y + 24:.1f}">{escape(_short(node.name or "(unnamed)"))}</text></g>')


def _removed_nodes(model, builds: list[BuildReport]) -> list[str]:
    """ONNX nodes the graph passes folded away (BatchNormalization into Conv...) before kernels;
    unnamed ones are counted per op type."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    except (OSError, DecodeError):  # an .mlir input, or a file onnx cannot read: nothing to list
        return []
    kept = [node for build in builds[:1] for node in build.nodes]
    names = {node.name for node in kept if node.name}
    unnamed = Counter(n.op_type for n in proto.graph.node if not n.name)
    unnamed.subtract(node.op_type for node in kept if not node.name)
    return ([f"{n.name} ({n.op_type})" for n in proto.graph.node if n.name and n.name not in names]
            + [f"{count} unnamed {op_type}" for op_type, count in unnamed.items() if count > 0])


def _graphs(builds: list[BuildReport], removed: list[str]) -> str:
    figures = "".join(f"<figure><figcaption>{escape(b.label)}: {len(b.kernels)} kernels, "
                      f"{len(b.nodes)} nodes</figcaption>{graph_svg(b, f'graph-{b.label}')}</figure>"
                      for b in builds)
    legend = ('<p class="legend">Colour = kernel (nodes of one kernel share it). Thick dark edges stay '
              "inside a kernel; thin grey ones go through an intermediate buffer. Dashed grey nodes are "
              "views no kernel runs. Hover a node for its full name.</p>")
    folded = ""
    if removed:
        names = escape(", ".join(removed))
        shown = " open" if len(removed) <= 10 else ""  # a long list stays folded until clicked
        folded = (f'<details class="legend"{shown}><summary>ONNX nodes folded away by graph passes before '
                  f"kernels formed (not drawn)</summary>{names}</details>")
    return f'<h2 id="graphs">Graphs</h2>\n{legend}{folded}<div class="graphs">{figures}</div>'


# ----------------------------------------------------------------------------- timings

@dataclass
class TimingRow:
    kernel: str  # the fused kernel; the unfused kernels of its nodes are summed beside it
    nodes: list[str]
    fused_ms: float | None
    fused_flops: int
    unfused_ms: float | None
    unfused_flops: int


def timing_rows(unfused: BuildReport, fused: BuildReport) -> list[TimingRow]:
    """Per fused kernel: its time, and the time of the unfused kernels that ran the same nodes."""
    owner = {node: k.name for k in fused.kernels for node in k.nodes}
    parts = defaultdict(list)
    for k in unfused.kernels:
        parts[owner.get(k.nodes[0], k.name) if k.nodes else k.name].append(k)
    rows = []
    for k in fused.kernels:
        group = parts.pop(k.name, [])
        times = [p.ms_per_run for p in group if p.ms_per_run is not None]
        rows.append(TimingRow(k.name, k.nodes, k.ms_per_run, k.flops, sum(times) if times else None,
                              sum(p.flops for p in group)))
    for name, group in parts.items():  # unfused kernels whose nodes no fused kernel holds
        times = [p.ms_per_run for p in group if p.ms_per_run is not None]
        rows.append(TimingRow(name, [n for p in group for n in p.nodes], None, 0,
                              sum(times) if times else None, sum(p.flops for p in group)))
    return sorted(rows, key=lambda r: -max(r.fused_ms or 0.0, r.unfused_ms or 0.0))


def _bar(kind: str, ms: float | None, flops: int, total: float, longest: float,
         missing: str = "not profiled") -> str:
    if ms is None:
        return f'<div class="barline"><span class="barlabel">{kind}: {missing}</span></div>'
    gflops = f" &middot; {flops / ms * 1e-6:.2f} GFLOP/s" if ms > 0 and flops else ""
    width = 100 * ms / longest if longest else 0.0
    return (f'<div class="barline"><div class="track"><div class="bar {kind}" style="width:{width:.2f}%">'
            f'</div></div><span class="barlabel">{kind}: {ms:.4f} ms/run &middot; '
            f"{100 * ms / total if total else 0:.1f}%{gflops}</span></div>")


def _absent(row) -> str:
    """Why a row has no fused time: its nodes were folded into another kernel's weights."""
    return "no kernel (folded into a contraction's weights by the graph passes)" \
        if row.fused_flops == 0 and row.unfused_ms is not None else "not profiled"


def _timings(builds: list[BuildReport]) -> str:
    if len(builds) != 2:
        return ""
    unfused, fused = builds
    rows = timing_rows(unfused, fused)
    if all(r.fused_ms is None and r.unfused_ms is None for r in rows):
        return '<h2 id="timings">Per-kernel time</h2><p>This target does not profile kernels.</p>'
    totals = {b.label: sum(k.ms_per_run or 0.0 for k in b.kernels) for b in builds}
    longest = max(max(r.fused_ms or 0.0, r.unfused_ms or 0.0) for r in rows)
    colour = kernel_colours([k.name for k in fused.kernels])
    body = []
    for r in rows:
        swatch = f'<span class="swatch" style="background:{colour.get(r.kernel, OUTSIDE_FILL)}"></span>'
        body.append(f'<tr class="timing-row"><td title="{escape(", ".join(r.nodes))}">{swatch}'
                    f'{escape(r.kernel)} <span class="barlabel">({len(r.nodes)} node(s))</span></td><td>'
                    f"{_bar('fused', r.fused_ms, r.fused_flops, totals['fused'], longest, _absent(r))}"
                    f"{_bar('unfused', r.unfused_ms, r.unfused_flops, totals['unfused'], longest)}</td></tr>")
    key = ('<p class="legend"><span class="key" style="background:#3b7dd8"></span>fused kernel '
           '<span class="key" style="background:#c9a227"></span>the unfused kernels of the same nodes '
           f"(summed). Kernel time per run: fused {totals['fused']:.3f} ms, unfused "
           f"{totals['unfused']:.3f} ms (timers inside the native code, median over the runs; share = "
           "part of the build's kernel time).</p>")
    return f'<h2 id="timings">Per-kernel time</h2>\n{key}<table class="timing">{"".join(body)}</table>'


# ----------------------------------------------------------------------------- decisions

def _decisions(builds: list[BuildReport]) -> str:
    fused = builds[-1] if builds else None
    if fused is None:
        return ""
    colour = kernel_colours([k.name for k in fused.kernels])

    def items(lines, css="plain"):
        lines = list(lines)
        return (f'<ul class="{css}">' + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>"
                if lines else "")

    rows = ["<tr><th>kernel</th><th>nodes</th><th>fusion</th><th>kept apart</th></tr>"]
    for k in fused.kernels:
        nodes = items(f"{n} ({t})" for n, t in zip(k.nodes, k.op_types))
        rows.append(f'<tr class="decision"><td><span class="swatch" style="background:{colour[k.name]}">'
                    f"</span>{escape(k.name)}</td><td>{nodes}</td><td>{items(k.fusion)}</td>"
                    f"<td>{items(k.apart, 'apart')}</td></tr>")
    return (f'<h2 id="decisions">Fusion decisions ({escape(fused.label)} build)</h2>\n'
            f'<table class="decisions">{"".join(rows)}</table>')

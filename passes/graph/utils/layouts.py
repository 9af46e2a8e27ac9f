"""The layouts a graph pass may give a Conv (`dlc.layout` for x, `dlc.out_layout` for y), read
the same way by the passes that set them and the lowering that follows them.

onnx__Conv.html computes in NCHW; pointwise-convs-nhwc gives 1x1 convs x and y in NHWC and lets a
conv write the layout its reader wants (`dlc.out_layout`, only where it differs from x's).
"""

from __future__ import annotations

from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Operation

NCHW, NHWC = "NCHW", "NHWC"
TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]  # Transpose perms


def conv_layouts(op: Operation) -> tuple[str, str]:
    """(x's layout, y's layout) of a Conv: NCHW unless a pass rewrote it."""
    layout = op.attributes.get("dlc.layout")
    x_layout = layout.data if isinstance(layout, StringAttr) else NCHW
    out = op.attributes.get("dlc.out_layout")
    return x_layout, out.data if isinstance(out, StringAttr) else x_layout

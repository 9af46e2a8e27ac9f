"""The input shapes a user pins (`--shape`, `input_shapes=`): by input or by symbolic dimension name.

`--shape input_ids=1x128` pins one input's whole shape; `--shape batch=1` pins every symbolic
dimension named `batch` (its `dim_param`), as onnxruntime's
`SessionOptions.add_free_dimension_override_by_name` does. A name that is both an input and a
dimension name means the input. An input pinned by name wins over dimension names for that
input. What is left symbolic after the pins is reported all at once, with an example.
"""

from __future__ import annotations

import numpy as np
import onnx

from dlc.errors import ModelLoadError, UnsupportedError

UNNAMED = "?"  # a symbolic dimension without a dim_param: pinned per input only


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs: IR version 3 files also list every initializer as an input."""
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def declared_shape(value: onnx.ValueInfoProto) -> list[int | str] | None:
    """An input's dims: ints where static, the dim_param (or "?") where symbolic; None if no shape."""
    tensor_type = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or UNNAMED) for d in tensor_type.shape.dim]


def symbolic_inputs(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """{input: declared dims} of every input with a symbolic dimension, in graph order."""
    found = {}
    for value in graph_inputs(model):
        dims = declared_shape(value)
        if dims is not None and any(isinstance(d, str) for d in dims):
            found[value.name] = dims
    return found


def dimension_names(model: onnx.ModelProto) -> list[str]:
    """The names of the inputs' symbolic dimensions, in order of first appearance."""
    names: dict[str, None] = {}
    for dims in symbolic_inputs(model).values():
        names.update((d, None) for d in dims if isinstance(d, str) and d != UNNAMED)
    return list(names)


def _positive(shape, what: str, name: str) -> tuple[int, ...]:
    sizes = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in sizes):
        raise ModelLoadError(f"--shape {name}: dimensions must be positive integers, got {list(sizes)}",
                             f"give {what}, e.g. --shape {name}=1x3x224x224 for an input or "
                             f"--shape {name}=1 for a dimension name")
    return tuple(int(s) for s in sizes)


def split_pins(model: onnx.ModelProto, input_shapes: dict | None) -> tuple[dict, dict]:
    """(input name -> shape, dimension name -> size) from the user's pins, each name checked."""
    inputs = {value.name for value in graph_inputs(model)}
    names = dimension_names(model)
    by_input, by_dim = {}, {}
    for name, shape in (input_shapes or {}).items():
        if name in inputs:
            by_input[name] = _positive(shape, f"every dimension of input '{name}'", name)
        elif name in names:
            size = _positive(shape, f"one size for the dimension '{name}'", name)
            if len(size) != 1:
                raise ModelLoadError(f"--shape {name}: '{name}' is a symbolic dimension name, which takes one "
                                     f"size, got {list(size)}", f"write --shape {name}={size[0]}")
            by_dim[name] = size[0]
        else:
            raise ModelLoadError(f"--shape names '{name}', which is neither an input nor a symbolic dimension "
                                 f"of the model; its inputs are {sorted(inputs)}"
                                 + (f" and its dimension names {names}" if names else
                                    " (it has no named symbolic dimensions)"))
    return by_input, by_dim


def resolve_input_shapes(model: onnx.ModelProto, input_shapes: dict | None) -> dict[str, tuple[int, ...]]:
    """input name -> shape for every input pinned by name, or whose symbolic dims are all named
    and pinned (static dims kept). Inputs left symbolic are absent: `unpinned` lists them."""
    by_input, by_dim = split_pins(model, input_shapes)
    resolved = dict(by_input)
    for name, dims in symbolic_inputs(model).items():
        if name not in resolved and all(not isinstance(d, str) or d in by_dim for d in dims):
            resolved[name] = tuple(by_dim[d] if isinstance(d, str) else d for d in dims)
    return resolved


def unpinned(model: onnx.ModelProto, input_shapes: dict | None) -> dict[str, list[int | str]]:
    """{input: declared dims} of the inputs that the pins leave with a symbolic dimension."""
    resolved = resolve_input_shapes(model, input_shapes)
    return {name: dims for name, dims in symbolic_inputs(model).items() if name not in resolved}


def pins_of_one(model: onnx.ModelProto, input_shapes: dict | None, size: int = 1) -> dict[str, tuple[int, ...]]:
    """The pins that set every dimension the user left symbolic to `size` (what `dlc run` uses):
    one per dimension name, and per input where a dimension has no name."""
    _, by_dim = split_pins(model, input_shapes)
    added: dict[str, tuple[int, ...]] = {}
    for name, dims in unpinned(model, input_shapes).items():
        if UNNAMED in dims:
            added[name] = tuple(by_dim.get(d, size) if isinstance(d, str) else d for d in dims)
        else:
            added.update((d, (size,)) for d in dims if isinstance(d, str) and d not in by_dim)
    return added


def _dims_text(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def unpinned_error(model: onnx.ModelProto, left: dict[str, list[int | str]]) -> UnsupportedError:
    """One error naming every input left symbolic, with its dims and an example --shape."""
    listed = ", ".join(f"'{name}' {_dims_text(dims)}" for name, dims in left.items())
    named = dimension_names(model)
    by_input = ",".join(f"{name}={'x'.join('1' if isinstance(d, str) else str(d) for d in dims)}"
                        for name, dims in left.items())
    example = (f"--shape {','.join(f'{d}=1' for d in named)} (by dimension name) or --shape {by_input}"
               if named and not any(UNNAMED in dims for dims in left.values()) else f"--shape {by_input}")
    error = UnsupportedError(
        f"{len(left)} input(s) have symbolic dimensions and this step compiles for static shapes: {listed}",
        f"pin them with {example} (input_shapes= in dlc.compile, which also takes dimension names); "
        "dlc.compile and dlc run pick the shapes themselves")
    error.unpinned_inputs = left  # what dlc.compile specialises on
    return error

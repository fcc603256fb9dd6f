"""Apache TVM, imported late, and ONNX → Relax with errors that name the node at fault.

``import tvm`` costs about a second and imports torch, so nothing here imports
it at module load; :func:`import_tvm` does, and turns a missing or broken
install into a :class:`ToolchainError` that says how to install it.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import onnx

from edgedistill.errors import ToolchainError, exception_line

INSTALL_HINT = "pip install 'edgedistill[tvm]'"
FALLBACK_HINT = "use --backend onnxruntime for this model"


def import_tvm() -> types.ModuleType:
    """``import tvm`` or a ToolchainError saying how to install it."""
    try:
        import tvm
        import tvm.relax  # noqa: F401 - the compiler half; runtime-only installs lack it
    except (ImportError, OSError) as exc:
        raise ToolchainError(f"Apache TVM is not available ({exc})", INSTALL_HINT) from None
    return tvm


def _failing_node(tb: types.TracebackType | None) -> tuple[str, str] | None:
    """(op, node name) of the ONNX converter a traceback went through, innermost first.

    TVM's converters are classmethods ``_impl_vN(cls, bb, inputs, attr, params)``
    whose ``attr["tvm_custom"]["name"]`` is the node's name.
    """
    found = None
    while tb is not None:
        local = tb.tb_frame.f_locals
        attr, cls = local.get("attr"), local.get("cls")
        if isinstance(attr, dict) and isinstance(attr.get("tvm_custom"), dict) and isinstance(cls, type):
            found = (cls.__name__, str(attr["tvm_custom"].get("name", "?")))
        tb = tb.tb_next
    return found


def unsupported_ops(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Operators TVM's ONNX importer has no converter for: {op: [node names]}."""
    try:  # a private helper of TVM's importer; without it, from_onnx's own error still names the op
        from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map
    except ImportError:
        return {}
    known = set(_get_convert_map()) | {"Constant", "If"}  # the importer handles these two itself
    missing: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type not in known:
            missing.setdefault(node.op_type, []).append(node.name or "?")
    return missing


def onnx_to_relax(model: onnx.ModelProto, input_name: str, input_shape: Sequence[int]) -> Any:
    """Import ``model`` with a fixed input shape; a ToolchainError names the op/node TVM rejects."""
    import_tvm()
    from tvm.relax.frontend.onnx import from_onnx

    graph_inputs = [i.name for i in model.graph.input]
    if input_name not in graph_inputs:
        raise ToolchainError(f"the ONNX model has no input '{input_name}'", "inputs: " + ", ".join(graph_inputs))
    missing = unsupported_ops(model)
    if missing:
        where = "; ".join(f"{op} (node {', '.join(nodes[:3])})" for op, nodes in sorted(missing.items()))
        raise ToolchainError(f"TVM's ONNX importer does not support: {where}", FALLBACK_HINT)
    try:
        return from_onnx(model, shape_dict={input_name: [int(d) for d in input_shape]})
    except Exception as exc:  # TVM raises its own error types (tvm.error.*) and plain ones
        node = _failing_node(exc.__traceback__)
        where = f" at {node[0]} node '{node[1]}'" if node else ""
        first_line = exception_line(exc)
        raise ToolchainError(f"TVM could not import the ONNX model{where}: {first_line}", FALLBACK_HINT) from exc

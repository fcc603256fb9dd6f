"""PyTorch → one self-contained, simplified ONNX file with the metadata a deployment needs.

We use the dynamo exporter (clean graph), which emits opset ≥ 18; targets that
need opset 17 (TensorRT 8.5 on JetPack 5) get the graph rewritten by
:mod:`edgedistill.export.opset`. onnxslim then folds constants, folds
BatchNorm into the convs and removes no-op nodes.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxscript.optimizer
import torch
from torch import nn

from edgedistill.errors import EdgeDistillError, exception_line
from edgedistill.export.opset import downgrade_18_to_17
from edgedistill.utils.atomic import save_with

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DYNAMO_MIN_OPSET = 18


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    opset: int
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    nodes: int
    op_types: tuple[str, ...]
    seconds: float


class ExportError(EdgeDistillError):
    """The model could not be exported or the export does not match PyTorch."""


def _quiet():  # noqa: ANN202 - a context manager
    """The exporter prints progress and warnings; keep the console for our own output."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    logger = logging.getLogger("torch.onnx")
    stack.callback(logger.setLevel, logger.level)
    logger.setLevel(logging.ERROR)
    return stack


def _to_onnx(model: nn.Module, example: torch.Tensor, opset: int, dynamic_batch: bool) -> onnx.ModelProto:
    dynamic = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=max(opset, DYNAMO_MIN_OPSET),
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=dynamic, verbose=False,
                optimize=False,
            )
            # The exporter's own optimiser spends minutes pattern-matching the shift's many
            # slices; constant folding here plus onnxslim below gives the same graph in half the time.
            onnxscript.optimizer.fold_constants(program.model)
    except Exception as exc:
        raise ExportError(
            f"torch.onnx.export failed for {type(model).__name__}: {type(exc).__name__}: {exception_line(exc, last=False)[:300]}",
            "the model uses an op the ONNX exporter cannot handle; check it with torch.export.export first",
        ) from exc
    proto = program.model_proto
    if opset == DYNAMO_MIN_OPSET - 1:
        proto = downgrade_18_to_17(proto)
    elif opset < DYNAMO_MIN_OPSET:
        raise ExportError(f"ONNX opset {opset} is older than this exporter can write (17 or newer)",
                          "set onnx_opset = 17 or higher in the target")
    return proto


def _simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    with _quiet():
        return onnxslim.slim(proto)


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, int, int, int],
    path: str | Path,
    *,
    opset: int = 20,
    dynamic_batch: bool = False,
    metadata: dict[str, object] | None = None,
) -> OnnxExport:
    """Export ``model`` (eval mode) for inputs of ``input_shape`` (N, C, H, W) to ``path``, atomically."""
    start = time.perf_counter()
    model = model.eval()
    proto = _simplify(_to_onnx(model, torch.zeros(input_shape), opset, dynamic_batch))
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key = f"edgedistill.{key}"
        entry.value = value if isinstance(value, str) else json.dumps(value)
    proto.producer_name = "edgedistill"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"the exported ONNX graph is invalid: {exc}", "report this with the model name") from exc
    save_with(path, lambda tmp: onnx.save_model(proto, str(tmp)))
    opset_found = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return OnnxExport(
        Path(path), opset_found, tuple(input_shape), dynamic_batch, len(proto.graph.node),
        tuple(sorted({n.op_type for n in proto.graph.node})), time.perf_counter() - start,
    )


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``edgedistill.*`` metadata of an exported model (without the prefix)."""
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key.removeprefix("edgedistill."): p.value for p in proto.metadata_props if p.key.startswith("edgedistill.")}

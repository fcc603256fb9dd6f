"""Weight bytes of an ONNX model without the ``onnx`` package.

The boards have numpy and a runtime, not ``onnx``, so this reads just enough
of the protobuf wire format to sum the initializers of the main graph:
``ModelProto.graph`` (field 7) -> ``GraphProto.initializer`` (field 5) ->
``TensorProto.dims`` (field 1) and ``data_type`` (field 2). The size is
``prod(dims) * element size``, whether the data is inline or external.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Tuple

from deploy.errors import DeployError

#: TensorProto.DataType -> bytes per element (sub-byte types as fractions).
ELEMENT_BYTES = {
    1: 4.0,  # FLOAT
    2: 1.0,  # UINT8
    3: 1.0,  # INT8
    4: 2.0,  # UINT16
    5: 2.0,  # INT16
    6: 4.0,  # INT32
    7: 8.0,  # INT64
    9: 1.0,  # BOOL
    10: 2.0,  # FLOAT16
    11: 8.0,  # DOUBLE
    12: 4.0,  # UINT32
    13: 8.0,  # UINT64
    14: 8.0,  # COMPLEX64
    15: 16.0,  # COMPLEX128
    16: 2.0,  # BFLOAT16
    17: 1.0,  # FLOAT8E4M3FN
    18: 1.0,  # FLOAT8E4M3FNUZ
    19: 1.0,  # FLOAT8E5M2
    20: 1.0,  # FLOAT8E5M2FNUZ
    21: 0.5,  # UINT4
    22: 0.5,  # INT4
    23: 0.5,  # FLOAT4E2M1
}

_GRAPH, _INITIALIZER, _DIMS, _DATA_TYPE = 7, 5, 1, 2


def _varint(buf: memoryview, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[Tuple[int, int, object]]:
    """(field number, wire type, value) of one message; length-delimited values as memoryviews."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated message")
        yield field, wire, value


def _tensor_bytes(tensor: memoryview) -> float:
    dims: List[int] = []
    data_type = 0
    for field, wire, value in _fields(tensor):
        if field == _DIMS and wire == 0:
            dims.append(int(value))  # type: ignore[arg-type]
        elif field == _DIMS and wire == 2:
            packed, pos = value, 0  # type: ignore[assignment]
            while pos < len(packed):  # type: ignore[arg-type]
                dim, pos = _varint(packed, pos)  # type: ignore[arg-type]
                dims.append(dim)
        elif field == _DATA_TYPE:
            data_type = int(value)  # type: ignore[arg-type]
    count = 1
    for dim in dims:
        count *= dim
    return count * ELEMENT_BYTES.get(data_type, 0.0)


def weight_bytes(path: Path) -> int:
    """Sum of the main graph's initializer sizes in bytes."""
    try:
        data = memoryview(Path(path).read_bytes())
        total = 0.0
        for field, wire, graph in _fields(data):
            if field == _GRAPH and wire == 2:
                for inner, inner_wire, tensor in _fields(graph):  # type: ignore[arg-type]
                    if inner == _INITIALIZER and inner_wire == 2:
                        total += _tensor_bytes(tensor)  # type: ignore[arg-type]
    except (OSError, ValueError) as exc:
        raise DeployError(f"cannot read the weights of {Path(path).name}: {exc}", "is it an ONNX model?") from None
    return int(total + 0.5)

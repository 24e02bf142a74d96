"""Arrow <-> numpy for fixed-width columns, through their buffers.

pyarrow's own conversions (``Array.to_numpy``, ``pa.array`` of a numpy array, ``fill_null``
with a Python scalar) import pandas the first time they run, to ask whether their argument is
a pandas object: 0.15-0.2 s of every fresh process's first imputation or synthesis (a CLI
call, a dbt run, a Spark worker), for a library that never uses it. The runtime moves its
numbers through these functions instead; they copy nothing that pyarrow would not.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def valid(array: pa.Array) -> np.ndarray:
    """True where a cell is not NULL (``~array.is_null()``), from the validity bitmap."""
    rows = len(array)
    if pa.types.is_null(array.type):
        return np.zeros(rows, dtype=bool)
    bitmap = array.buffers()[0]
    if bitmap is None or array.null_count == 0:
        return np.ones(rows, dtype=bool)
    return _bits(bitmap, array.offset, rows)


def values(array: pa.Array) -> np.ndarray:
    """The cells of a fixed-width array (numbers, dates, times, booleans) as numpy, read-only;
    what a NULL cell holds is unspecified (read ``valid`` for that)."""
    rows = len(array)
    kind = array.type
    if pa.types.is_boolean(kind):
        data = array.buffers()[1]
        return _bits(data, array.offset, rows) if data is not None else np.zeros(rows, bool)
    dtype = numpy_type(kind)
    data = array.buffers()[1]
    if data is None:
        return np.zeros(rows, dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=array.offset + rows)[array.offset :]


def arrow(data: np.ndarray, arrow_type: pa.DataType | None = None) -> pa.Array:
    """A numpy array of numbers or booleans as an Arrow array with no NULLs (of
    ``arrow_type`` where given, which must have the same width)."""
    data = np.ascontiguousarray(data)
    if data.dtype == np.bool_:
        packed = np.packbits(data, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(data), [None, pa.py_buffer(packed)])
    kind = arrow_type if arrow_type is not None else pa.from_numpy_dtype(data.dtype)
    return pa.Array.from_buffers(kind, len(data), [None, pa.py_buffer(data)])


def of_values(items: list, arrow_type: pa.DataType) -> pa.Array:
    """Python values (a vocabulary's levels) as an Arrow array of ``arrow_type``: text from
    its UTF-8 bytes and offsets, other types through ``pa.array`` (which imports pandas)."""
    if arrow_type not in (pa.string(), pa.large_string()):
        return pa.array(items, type=arrow_type)
    encoded = [b"" if item is None else str(item).encode() for item in items]
    wide = arrow_type == pa.large_string()
    offsets = np.zeros(len(items) + 1, dtype=np.int64 if wide else np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    present = np.array([item is not None for item in items], dtype=bool)
    bitmap = None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))
    buffers = [bitmap, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(arrow_type, len(items), buffers)


def numpy_type(kind: pa.DataType) -> np.dtype:
    """The numpy type of a fixed-width Arrow type's cells (temporal ones: their integer
    storage, days or units since the epoch)."""
    if pa.types.is_floating(kind):
        return np.dtype(f"float{kind.bit_width}")
    if pa.types.is_unsigned_integer(kind):
        return np.dtype(f"uint{kind.bit_width}")
    return np.dtype(f"int{kind.bit_width}")


def _bits(buffer: pa.Buffer, offset: int, rows: int) -> np.ndarray:
    bytes_ = np.frombuffer(buffer, dtype=np.uint8)
    return np.unpackbits(bytes_, bitorder="little", count=offset + rows)[offset:].astype(bool)

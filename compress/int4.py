"""INT4 weight storage for the INT8 ONNX Runtime model: 4-bit on disk, INT8 kernels in the session.

ONNX Runtime's INT4 kernel (``MatMulNBits``) makes the model small but, at batch 1 / 16 tokens on this CPU,
2-3x slower than the dynamic INT8 kernels (``DynamicQuantizeMatMul``; measurements in /work/shared/STACK.md).
So the ``onnx-int4`` export keeps the INT8 graph of ``quantize_dynamic`` and stores each of its large INT8/UINT8
weight tensors (``MatMulInteger`` weights, the quantised embedding ``Gather`` tables) as

* one ``uint8`` step code ``c`` per segment of a row (each row cut into equal segments of at most ``block``
  values, default 64; the segment's step is ``c / div`` INT8 units; ``div`` 16, or 8 for tables whose values
  span more than 127), and
* 4-bit codes ``q`` in [0, 15], two a byte: byte ``i`` of a segment of ``n`` values holds value ``i`` (low
  nibble) and value ``i + ceil(n / 2)`` (high nibble),

in ``model.int4``, next to ``model.onnx``, the graph with those initializers' names, types and shapes and an
external-data reference into ``model.int4`` at the tensor's place in the *expanded* layout (``expanded_offset``,
every tensor 4 KiB-aligned), which lies past the end of the packed file: a session opened on ``model.onnx`` alone
fails loudly (out of bounds) instead of reading packed bytes as weights.  (Exports before ``expanded_offset``
carried a 1-byte reference instead, and load through ``expand`` only.)  When a predictor loads the directory, ``expand`` turns every row back into its INT8 values
``round((q - 8) * c / div) + zero point`` with two ``bytes.translate`` calls (a 256-entry table per step code)
into one preallocated buffer, and the session takes each tensor from it as a user-owned initializer
(``AddInitializer``: ONNX Runtime neither parses nor copies it): INT4 size on disk, the INT8 kernels and speed
in the session, and less memory at load than the INT8 ``.onnx`` file, whose weights ONNX Runtime holds twice
while it builds the session.  Expansion is pure Python (no numpy, no onnx), so the numpy-free ``onnxruntime-c``
predictor runs these directories too.  (Decoding in the graph and letting ONNX Runtime's constant folding run it
was tried first: folding keeps float intermediates of every tensor alive, and a session's peak RSS went to
~0.7 GB.)

``expanded_model`` is the lower-memory load of the numpy-free predictor: it streams the expanded tensors, one at a
time, into a private temporary copy of the directory's model (``model.onnx`` plus the expanded ``model.int4``,
a plain INT8 external-data file), ONNX Runtime opens that as an ordinary INT8 model and the copy is deleted as
soon as the session exists.  The weights are then ONNX Runtime's own: it frees each ``MatMulInteger`` weight once
its kernel has prepacked it, where user-owned initializers (``AddInitializer``) stay alongside their prepacked
copies for the session's life.  On the bench_compress nano (ORT 1.32): 5 MiB lower peak RSS (VmHWM) than
``expand`` + ``AddInitializer``, identical outputs.

A row is a row of the stored INT8 tensor: an input feature of a ``MatMulInteger`` weight (whose INT8 values are
already scaled per output channel) or a token of the embedding table.  A segment's step code is chosen to
minimise the squared error in INT8 units (a small search around ``max |v| / 8``).  Segments of 64 rather than
whole rows: on the bench_compress student, dev sentence accuracy 67.23 vs 67.04 (INT8: 67.20), for 1 byte per
64 weights.
"""
from __future__ import annotations

from pathlib import Path

INT4_FILE = "model.int4"
ALIGN = 4096  # each tensor's offset in the expanded layout (ONNX Runtime maps page-aligned external data)
_RANGES = {3: (-128, 127), 2: (0, 255)}  # TensorProto INT8, UINT8: what the stored tensor may hold


# -- packing (export side; numpy and onnx) --------------------------------------------------------------
def _row_codes(rows, div: float):
    """Integer rows ``[R, n]`` (zero point removed) -> (4-bit codes in [0, 15] ``[R, n]``, step codes ``[R]``)."""
    import numpy as np

    v = rows.astype(np.float64)
    base = np.clip(np.ceil(np.abs(v).max(-1, keepdims=True) / 8.0 * div), 1, 255)
    best_err = best_q = best_c = None
    for delta in (-3, -2, -1, 0, 1, 2):
        c = np.clip(base + delta, 1, 255)
        q = np.clip(np.round(v / (c / div)), -8, 7)
        err = ((np.round(q * (c / div)) - v) ** 2).sum(-1, keepdims=True)
        if best_err is None:
            best_err, best_q, best_c = err, q, c
        else:
            better = err < best_err
            best_err, best_q, best_c = (np.where(better, err, best_err), np.where(better, q, best_q),
                                        np.where(better, c, best_c))
    return (best_q + 8).astype(np.uint8), best_c[:, 0].astype(np.uint8)


def segment_length(n: int, block: int) -> int:
    """Values per step code in a row of ``n``: the longest equal split of the row that is at most ``block``."""
    return next(n // k for k in range(1, n + 1) if n % k == 0 and n // k <= max(block, 1))


def pack_tensor(w, zero_point: int = 0, block: int = 64) -> dict:
    """A 2-D INT8/UINT8 array -> ``{"codes", "packed", "div", "segment", "decoded"}`` (``decoded``: the INT8 tensor
    the session will hold, computed the way ``expand`` computes it).  Each row is cut into equal segments of at
    most ``block`` values, one step code each."""
    import numpy as np

    segment = segment_length(w.shape[1], block)
    full_shape = w.shape
    rows = (w.astype(np.int16) - zero_point).reshape(-1, segment)  # segments are contiguous in memory
    r, n = rows.shape
    div = 16.0 if np.abs(rows).max(initial=0) <= 127 else 8.0  # the largest step, 255 / div, covers the values
    half = (n + 1) // 2
    padded = np.zeros((r, 2 * half), np.int16)
    padded[:, :n] = rows
    q, codes = _row_codes(padded, div)
    packed = (q[:, :half] | (q[:, half:] << 4)).astype(np.uint8)
    step = codes.astype(np.float64)[:, None] / div
    full = np.concatenate([packed & 15, packed >> 4], 1).astype(np.float64) - 8.0
    low, high = _RANGES[3] if w.dtype == np.int8 else _RANGES[2]
    decoded = np.clip(np.round(full * step) + zero_point, low, high)[:, :n].astype(w.dtype).reshape(full_shape)
    return {"codes": codes, "packed": packed, "div": div, "segment": segment, "decoded": decoded}


def _targets(graph, embedding: bool, min_elements: int) -> dict[str, int]:
    """Initializer name -> zero point for the INT8/UINT8 weights ``quantize_dynamic`` wrote: ``MatMulInteger``
    weights (or, in a graph ONNX Runtime optimised, those of ``DynamicQuantizeMatMul``/``MatMulIntegerToFloat``), and the quantised ``Gather`` tables (their zero point is the ``DequantizeLinear``'s after them);
    tensors with per-channel zero points, or smaller than ``min_elements``, stay in the graph."""
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    dq_zp = {n.input[0]: (n.input[2] if len(n.input) > 2 else "") for n in graph.node if n.op_type == "DequantizeLinear"}
    found: dict[str, str] = {}
    zp_input = {"MatMulInteger": 3, "DynamicQuantizeMatMul": 3, "MatMulIntegerToFloat": 5}  # ORT's fused forms too
    for node in graph.node:
        if node.op_type in zp_input and len(node.input) > 1:
            k = zp_input[node.op_type]
            found[node.input[1]] = node.input[k] if len(node.input) > k else ""
        elif embedding and node.op_type == "Gather" and node.output[0] in dq_zp:
            found[node.input[0]] = dq_zp[node.output[0]]
    out = {}
    for name, zp_name in found.items():
        init = inits.get(name)
        if init is None or init.data_type not in _RANGES or len(init.dims) != 2 or \
                int(np.prod(init.dims)) < min_elements:
            continue
        zp = numpy_helper.to_array(inits[zp_name]).reshape(-1) if zp_name in inits else np.zeros(1, np.int64)
        if np.unique(zp).size == 1:
            out[name] = int(zp[0])
    return out


def pack_int4(model, embedding: bool = True, min_elements: int = 4096, block: int = 64):
    """Take the large INT8 tensors out of an INT8 ``quantize_dynamic`` ModelProto (changed in place) and pack them;
    returns ``(model, blob, spec)``: write the model as ``model.onnx``, ``blob`` as ``model.int4`` and ``spec``
    into the manifest (``int4``)."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    targets = _targets(graph, embedding, min_elements)
    parts, tensors, offset, expanded, errors = [], [], 0, 0, {}
    for name, zero_point in targets.items():
        w = numpy_helper.to_array(inits[name])
        p = pack_tensor(w, zero_point, block)
        data = p["codes"].tobytes() + p["packed"].tobytes()
        tensors.append({"name": name, "dims": [int(d) for d in w.shape], "data_type": int(inits[name].data_type),
                        "zero_point": zero_point, "div": p["div"], "segment": p["segment"], "offset": offset,
                        "bytes": len(data), "expanded_offset": expanded})
        parts.append(data)
        offset += len(data)
        expanded += -(-int(w.size) // ALIGN) * ALIGN
        centred = w.astype(np.float64) - zero_point
        err = p["decoded"].astype(np.float64) - w
        errors[name] = float(np.sqrt((err ** 2).mean()) / max(np.sqrt((centred ** 2).mean()), 1e-12))
    for t in tensors:  # name, type and shape stay in the graph; the predictor supplies the data
        init = inits[t["name"]]
        init.ClearField("raw_data")
        # a reference into model.int4 at the expanded layout's offset: right for the expanded copy that
        # ``expanded_model`` writes; past the end of the packed file (the expanded layout is longer), so a session
        # on model.onnx alone fails loudly, and one given the tensors as initializers reads nothing
        init.data_location = TensorProto.EXTERNAL
        for key, value in (("location", INT4_FILE), ("offset", str(t["expanded_offset"])),
                           ("length", str(t["dims"][0] * t["dims"][1]))):
            entry = init.external_data.add()
            entry.key, entry.value = key, value
    if tensors and expanded <= offset:  # cannot happen for 4-bit codes (n / 2 + n / segment < n); keep it loud
        raise ValueError("int4: the expanded layout is not longer than the packed file")
    spec = {"file": INT4_FILE, "tensors": tensors, "expanded_bytes": expanded, "align": ALIGN,
            "max_relative_rms_error": round(max(errors.values()), 4) if errors else 0.0}
    return model, b"".join(parts), spec


# -- expansion (load side; standard library only) ------------------------------------------------------
def _tables(div: float, zero_point: int, data_type: int) -> memoryview:
    """``bytes.translate`` tables giving the stored byte values, for every step code ``c``: the low-nibble table
    at ``[512 c, 512 c + 256)``, the high-nibble one right after it; one 128 KiB buffer (256 small ``bytes``
    per table set would stay behind in the interpreter's heap after the expansion, ~0.3 MiB each)."""
    low, high = _RANGES[data_type]
    out = bytearray(512 * 256)
    for c in range(256):
        vals = [min(high, max(low, round((q - 8) * c / div) + zero_point)) & 0xFF for q in range(16)]
        out[512 * c:512 * c + 256] = bytes(vals[x & 15] for x in range(256))
        out[512 * c + 256:512 * (c + 1)] = bytes(vals[x >> 4] for x in range(256))
    return memoryview(out)


def iter_expanded(model_dir, manifest: dict):
    """``(tensor spec, bytearray of its INT8 values)`` for every INT4 tensor of an ``onnx-int4`` directory, one
    tensor in memory at a time."""
    spec = manifest["int4"]
    tables = {}
    with open(Path(model_dir) / spec.get("file", INT4_FILE), "rb") as f:
        for t in spec["tensors"]:
            n = t.get("segment", t["dims"][1])  # values per step code; segments are contiguous in the tensor
            rows = t["dims"][0] * t["dims"][1] // n
            half = (n + 1) // 2
            key = (t["div"], t["zero_point"], t["data_type"])
            if key not in tables:
                tables[key] = _tables(*key)
            table = tables[key]
            f.seek(t["offset"])
            data = f.read(t["bytes"])
            if len(data) != rows + rows * half:
                raise ValueError(f"{f.name}: {t['name']} has {len(data)} bytes, expected {rows + rows * half}")
            buf = bytearray(rows * n)
            pos = 0
            for i in range(rows):
                chunk = data[rows + i * half:rows + (i + 1) * half]
                c = 512 * data[i]
                buf[pos:pos + half] = chunk.translate(table[c:c + 256])
                buf[pos + half:pos + n] = chunk.translate(table[c + 256:c + 512])[:n - half]
                pos += n
            yield t, buf


def expand(model_dir, manifest: dict) -> tuple[bytearray, list[tuple[str, list[int], int, int, int]]]:
    """Every INT4 tensor of an ``onnx-int4`` directory expanded to its INT8 values, in one buffer:
    ``(buffer, [(name, dims, data_type, offset, nbytes), ...])``.  The predictor hands each slice to ONNX Runtime
    as a user-owned initializer (``AddInitializer``), so the buffer must live as long as the session."""
    spec = manifest["int4"]
    total = sum(t["dims"][0] * t["dims"][1] for t in spec["tensors"])
    out = bytearray(total)
    layout, pos = [], 0
    for t, buf in iter_expanded(model_dir, manifest):
        layout.append((t["name"], list(t["dims"]), t["data_type"], pos, len(buf)))
        out[pos:pos + len(buf)] = buf
        pos += len(buf)
    return out, layout


def has_expanded_layout(manifest: dict) -> bool:
    """Whether the directory's graph references its INT4 tensors at their ``expanded_offset`` (``expanded_model``
    can load it); exports before that carried 1-byte references and load through ``expand``."""
    tensors = (manifest.get("int4") or {}).get("tensors") or []
    return bool(tensors) and all("expanded_offset" in t for t in tensors)


class expanded_model:
    """``with expanded_model(dir, manifest) as path:`` a private temporary directory holding a copy of the
    model's graph and ``model.int4`` expanded to INT8 at the graph's external-data offsets: an ordinary INT8 ONNX
    model at ``path`` for as long as the block runs; open the session inside it (ONNX Runtime reads, or maps,
    the weights while it builds the session, so the files may go as soon as it exists).  Streams one tensor at a
    time; standard library only."""

    def __init__(self, model_dir, manifest: dict):
        if not has_expanded_layout(manifest):
            raise ValueError(f"{model_dir}: this onnx-int4 export predates expanded_offset; load it through expand()")
        self.model_dir, self.manifest = Path(model_dir), manifest
        self.dir = None

    def __enter__(self) -> Path:
        import os

        base = os.environ.get("TMPDIR") or "/tmp"
        for _ in range(100):
            candidate = Path(base) / f"tinydistill-int4-{os.getpid()}-{os.urandom(6).hex()}"
            try:
                candidate.mkdir(mode=0o700)
            except FileExistsError:
                continue
            self.dir = candidate
            break
        else:
            raise OSError(f"{base}: cannot create a private temporary directory")
        try:
            name = self.manifest.get("model_file", "model.onnx")
            (self.dir / name).write_bytes((self.model_dir / name).read_bytes())
            spec = self.manifest["int4"]
            with open(self.dir / spec.get("file", INT4_FILE), "wb") as f:
                for t, buf in iter_expanded(self.model_dir, self.manifest):
                    f.seek(t["expanded_offset"])
                    f.write(buf)
                f.truncate(max(t["expanded_offset"] + t["dims"][0] * t["dims"][1] for t in spec["tensors"]))
            return self.dir / name
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        if self.dir is not None:
            for p in self.dir.iterdir():
                p.unlink()
            self.dir.rmdir()
            self.dir = None

"""ONNX Runtime through its C API (ctypes), for a deployment process without numpy.

The Python ``onnxruntime`` package imports numpy (~23 MiB RSS) and its pybind module (~21 MiB): together with the
interpreter that is a ~60 MiB floor under every Python predictor, larger than a compressed nano model's own
share (~13-22 MiB), which is why the peak-RSS reduction of the ONNX Runtime predictor stops near -57 %.  The
wheel also ships the plain C library (``onnxruntime/capi/libonnxruntime.so.*``); calling it through ctypes
needs neither numpy nor the pybind module.  Measured on the nano SLU models of
``experiments/benchmarks/bench_compress.py`` with ``experiments/benchmarks/bench_capi_memory.py``.

Only what inference needs is bound: a session on a model file, int64 inputs, float32 outputs, as ``array``
buffers with a shape.  ``CPredictor`` is the end-to-end predictor on it (task encode/decode are pure Python):
``tinydistill predict|bench DIR --runtime onnxruntime-c``.
"""
from __future__ import annotations

import ctypes as C
import importlib.util
import os
import sys
from array import array
from pathlib import Path

from tinydistill.compress.text_predictor import TextPredictor

# The OrtApi version these bindings were written against (checked against onnxruntime_c_api.h of ONNX Runtime
# 1.22, whose ORT_API_VERSION is 22).  The function table is append-only, so a newer library serves this version
# with the same indices; an older one returns NULL for it, and loading fails with a clear error.
API_VERSION = 22
# Indices into that OrtApi function table (onnxruntime_c_api.h; version 1, and AddInitializer from version 3).
_IDX = dict(GetErrorMessage=2, CreateEnv=3, CreateSession=7, Run=9, CreateSessionOptions=10,
            SetSessionExecutionMode=13, DisableMemPattern=17, DisableCpuMemArena=19,
            SetSessionGraphOptimizationLevel=23, SetIntraOpNumThreads=24, SetInterOpNumThreads=25,
            SessionGetInputCount=30, SessionGetOutputCount=31, SessionGetInputName=36, SessionGetOutputName=37,
            CreateTensorWithDataAsOrtValue=49, GetTensorMutableData=51, GetDimensionsCount=61, GetDimensions=62,
            GetTensorTypeAndShape=65, CreateCpuMemoryInfo=69, AllocatorFree=76,
            GetAllocatorWithDefaultOptions=78, ReleaseEnv=92, ReleaseStatus=93, ReleaseMemoryInfo=94,
            ReleaseSession=95, ReleaseValue=96, ReleaseTensorTypeAndShapeInfo=99, ReleaseSessionOptions=100,
            AddSessionConfigEntry=130, AddInitializer=150)
_P = C.c_void_p
_SIG = dict(
    GetErrorMessage=(C.c_char_p, [_P]), CreateEnv=(_P, [C.c_int, C.c_char_p, C.POINTER(_P)]),
    CreateSession=(_P, [_P, C.c_char_p, _P, C.POINTER(_P)]),
    Run=(_P, [_P, _P, C.POINTER(C.c_char_p), C.POINTER(_P), C.c_size_t, C.POINTER(C.c_char_p), C.c_size_t,
              C.POINTER(_P)]),
    CreateSessionOptions=(_P, [C.POINTER(_P)]), SetSessionExecutionMode=(_P, [_P, C.c_int]),
    DisableMemPattern=(_P, [_P]), DisableCpuMemArena=(_P, [_P]), SetSessionGraphOptimizationLevel=(_P, [_P, C.c_int]),
    SetIntraOpNumThreads=(_P, [_P, C.c_int]), SetInterOpNumThreads=(_P, [_P, C.c_int]),
    SessionGetInputCount=(_P, [_P, C.POINTER(C.c_size_t)]), SessionGetOutputCount=(_P, [_P, C.POINTER(C.c_size_t)]),
    SessionGetInputName=(_P, [_P, C.c_size_t, _P, C.POINTER(_P)]),
    SessionGetOutputName=(_P, [_P, C.c_size_t, _P, C.POINTER(_P)]),
    CreateTensorWithDataAsOrtValue=(_P, [_P, _P, C.c_size_t, C.POINTER(C.c_int64), C.c_size_t, C.c_int,
                                         C.POINTER(_P)]),
    GetTensorMutableData=(_P, [_P, C.POINTER(_P)]), GetDimensionsCount=(_P, [_P, C.POINTER(C.c_size_t)]),
    GetDimensions=(_P, [_P, C.POINTER(C.c_int64), C.c_size_t]), GetTensorTypeAndShape=(_P, [_P, C.POINTER(_P)]),
    CreateCpuMemoryInfo=(_P, [C.c_int, C.c_int, C.POINTER(_P)]), AllocatorFree=(_P, [_P, _P]),
    GetAllocatorWithDefaultOptions=(_P, [C.POINTER(_P)]), ReleaseEnv=(None, [_P]), ReleaseStatus=(None, [_P]),
    ReleaseMemoryInfo=(None, [_P]), ReleaseSession=(None, [_P]), ReleaseValue=(None, [_P]),
    ReleaseTensorTypeAndShapeInfo=(None, [_P]), ReleaseSessionOptions=(None, [_P]),
    AddSessionConfigEntry=(_P, [_P, C.c_char_p, C.c_char_p]), AddInitializer=(_P, [_P, C.c_char_p, _P]))
_INT64, _FLOAT = 7, 1  # ONNXTensorElementDataType


def lean_process() -> None:
    """For a process that exists to run the lean predictor (``tinydistill predict --runtime onnxruntime-c``, its
    bench worker): let ``hashlib`` fall back to Python's built-in hashes instead of loading OpenSSL's libcrypto
    (3.7 MiB RSS).  The task modules import ``hashlib`` (split seeds, download checksums); a predictor hashes
    nothing.  Only takes effect before anything imported ``hashlib``; ``ssl`` does not depend on it."""
    if "hashlib" not in sys.modules and "_hashlib" not in sys.modules:
        sys.modules["_hashlib"] = None  # type: ignore[assignment]  (an import of it raises ImportError)


class _ApiBase(C.Structure):
    _fields_ = [("GetApi", C.CFUNCTYPE(_P, C.c_uint32)), ("GetVersionString", C.CFUNCTYPE(C.c_char_p))]


def _library() -> Path:
    spec = importlib.util.find_spec("onnxruntime")  # locates the wheel without importing it (or numpy)
    libs = sorted((Path(spec.origin).parent / "capi").glob("libonnxruntime.so*"))
    if not libs:
        raise OSError("libonnxruntime.so not found in the onnxruntime package")
    return libs[0]


def no_telemetry() -> None:
    """ONNX Runtime 1.32's Linux build starts a telemetry client (1DS, with an SQLite store and a device id under
    ``~/.cache/Microsoft/DeveloperTools``) with the first environment; a deployed predictor wants neither the
    writes nor the ~2 MiB RSS.  ``ORT_DISABLE_TELEMETRY=1`` unless the caller set it; read when the environment
    is created, so this runs before the library is loaded."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


class _Api:
    def __init__(self, library: Path | None = None, api_version: int = API_VERSION):
        path = library or _library()
        no_telemetry()
        lib = C.CDLL(str(path))
        lib.OrtGetApiBase.restype = C.POINTER(_ApiBase)
        base = lib.OrtGetApiBase().contents
        self.version = base.GetVersionString().decode()
        table = base.GetApi(api_version)  # NULL (and a message on stderr) when the library is older
        if not table:
            raise OSError(f"{path}: ONNX Runtime {self.version} does not serve OrtApi version {api_version}, "
                          f"which compress/ort_capi.py is written against (needs onnxruntime >= 1.{api_version})")
        self.api_version = api_version
        self._table = table
        funcs = C.cast(table, C.POINTER(_P))
        for name, index in _IDX.items():
            restype, argtypes = _SIG[name]
            setattr(self, name, C.CFUNCTYPE(restype, *argtypes)(funcs[index]))

    def check(self, status) -> None:
        if status:
            message = self.GetErrorMessage(status).decode(errors="replace")
            self.ReleaseStatus(status)
            raise RuntimeError(f"onnxruntime: {message}")


_API = None


def api() -> _Api:
    global _API
    if _API is None:
        _API = _Api()
    return _API


class CSession:
    """An inference session; ``run({name: (array('q'), shape)}) -> [(array('f'), shape), ...]``.

    Session options for a batch-1 predictor: one intra-op thread by default, sequential execution, and neither
    the CPU memory arena nor memory patterns (both keep freed buffers for reuse, which a process that runs one
    small request at a time pays for in RSS; ``compress.runtimes.OrtSession`` sets the same).  ``close()`` (also on
    ``with`` exit and garbage collection) releases the session, memory info and environment it created; the
    session options are released as soon as the session exists.
    """

    def __init__(self, path, threads: int = 1, arena: bool = False, initializers=None, optimize: bool = True,
                 rss_marks: list | None = None):
        """``initializers``: ``(buffer, [(name, dims, data_type, offset, nbytes), ...])`` (``compress.int4.expand``):
        tensors the session takes from ``buffer`` instead of the model file; the buffer is kept alive here.
        ``optimize=False``: no graph optimisation at load (``ORT_DISABLE_ALL``), for a graph ONNX Runtime optimised
        at export (``compress.export.optimise_onnx``; the manifest's ``graph_optimized``).  ``rss_marks``: gets
        ``("runtime environment", VmRSS KiB)`` once the environment exists (for the benchmark's breakdown: creating
        the first environment registers ONNX Runtime's operator schemas, ~11 MiB, whatever the model)."""
        a = self.a = api()
        self.env, self.session, self.mem = _P(), _P(), _P()
        self._initializers = []  # OrtValues (and the buffer under them) the session reads for its whole life
        opts = _P()
        try:
            a.check(a.CreateEnv(3, b"tinydistill", C.byref(self.env)))
            if rss_marks is not None:
                from tinydistill.compress.common import rss_kib

                rss_marks.append(("runtime environment", rss_kib()))
            a.check(a.CreateSessionOptions(C.byref(opts)))
            a.check(a.SetIntraOpNumThreads(opts, threads))
            a.check(a.SetInterOpNumThreads(opts, 1))
            a.check(a.SetSessionExecutionMode(opts, 0))
            if not optimize:
                a.check(a.SetSessionGraphOptimizationLevel(opts, 0))
            if not arena:
                a.check(a.DisableCpuMemArena(opts))
                a.check(a.DisableMemPattern(opts))
            a.check(a.CreateCpuMemoryInfo(0, 0, C.byref(self.mem)))  # OrtDeviceAllocator: no arena
            if initializers is not None:
                self._add_initializers(opts, *initializers)
            a.check(a.CreateSession(self.env, str(path).encode(), opts, C.byref(self.session)))
            alloc = _P()
            a.check(a.GetAllocatorWithDefaultOptions(C.byref(alloc)))
            self.input_names = self._names(a.SessionGetInputCount, a.SessionGetInputName, alloc)
            self.output_names = self._names(a.SessionGetOutputCount, a.SessionGetOutputName, alloc)
        except BaseException:
            self.close()
            raise
        finally:
            if opts:
                a.ReleaseSessionOptions(opts)
        self._in = (C.c_char_p * len(self.input_names))(*(n.encode() for n in self.input_names))
        self._out = (C.c_char_p * len(self.output_names))(*(n.encode() for n in self.output_names))

    def _add_initializers(self, opts, buf: bytearray, layout) -> None:
        a = self.a
        base = C.addressof((C.c_char * len(buf)).from_buffer(buf))
        self._initializers.append(buf)
        for name, dims, data_type, offset, nbytes in layout:
            shape = (C.c_int64 * len(dims))(*dims)
            value = _P()
            a.check(a.CreateTensorWithDataAsOrtValue(self.mem, _P(base + offset), nbytes, shape, len(dims), data_type,
                                                     C.byref(value)))
            self._initializers.append(value)
            a.check(a.AddInitializer(opts, name.encode(), value))

    def close(self) -> None:
        a = self.a
        for attr, release in (("session", a.ReleaseSession), ("mem", a.ReleaseMemoryInfo), ("env", a.ReleaseEnv)):
            handle = getattr(self, attr, None)
            if handle:
                release(handle)
                setattr(self, attr, _P())
            if attr == "session":  # the user-owned initializers must outlive the session, not the other way round
                for value in getattr(self, "_initializers", [])[1:]:
                    a.ReleaseValue(value)
                self._initializers = []

    def __enter__(self) -> "CSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn ctypes down already
            pass

    def _names(self, count_fn, name_fn, alloc):
        n = C.c_size_t()
        self.a.check(count_fn(self.session, C.byref(n)))
        names = []
        for i in range(n.value):
            p = _P()
            self.a.check(name_fn(self.session, i, alloc, C.byref(p)))
            names.append(C.string_at(p).decode())
            self.a.check(self.a.AllocatorFree(alloc, p))  # the name was allocated for us by ``alloc``
        return names

    def run(self, feed: dict) -> list:
        a = self.a
        if not self.session:
            raise RuntimeError("onnxruntime: the session is closed")
        values, keep = [], []
        try:
            for name in self.input_names:
                data, shape = feed[name]
                buf = (C.c_int64 * len(data)).from_buffer(data)
                dims = (C.c_int64 * len(shape))(*shape)
                keep += [buf, dims]
                v = _P()
                a.check(a.CreateTensorWithDataAsOrtValue(self.mem, C.cast(buf, _P), 8 * len(data), dims, len(shape),
                                                         _INT64, C.byref(v)))
                values.append(v)
            outs = (_P * len(self.output_names))()
            try:
                a.check(a.Run(self.session, None, self._in, (_P * len(values))(*values), len(values), self._out,
                              len(outs), outs))
                return [self._read(o) for o in outs]
            finally:
                for o in outs:  # read or not, every output is released here
                    if o:
                        a.ReleaseValue(o)
        finally:
            for v in values:
                a.ReleaseValue(v)

    def _read(self, value):
        a = self.a
        info, n = _P(), C.c_size_t()
        a.check(a.GetTensorTypeAndShape(value, C.byref(info)))
        try:
            a.check(a.GetDimensionsCount(info, C.byref(n)))
            dims = (C.c_int64 * n.value)()
            a.check(a.GetDimensions(info, dims, n.value))
        finally:
            a.ReleaseTensorTypeAndShapeInfo(info)
        shape = list(dims)
        size = 1
        for d in shape:
            size *= d
        ptr = _P()
        a.check(a.GetTensorMutableData(value, C.byref(ptr)))
        out = array("f")
        out.frombytes(C.string_at(ptr, 4 * size))
        return out, shape


def open_csession(model_dir: Path, manifest: dict, threads: int = 1, rss_marks: list | None = None) -> CSession:
    """The session of an ONNX/.ort model directory (``CPredictor`` and the ``onnxruntime-c`` runtime's
    ``compress.runtimes.CApiSession`` both open theirs here).  A graph ONNX Runtime optimised at export (the
    manifest's ``graph_optimized``) loads with optimisation off.  ``onnx-int4``: expanded into a private temporary
    INT8 copy that ONNX Runtime loads as its own weights (``compress.int4.expanded_model``; it frees each weight
    once prepacked), or, for exports before ``expanded_offset``, into user-owned INT8 initializers."""
    model_dir = Path(model_dir)
    model_file = model_dir / manifest.get("model_file", "model.onnx")
    optimize = not manifest.get("graph_optimized")  # optimised once at export: load it as it is
    if not manifest.get("int4"):
        return CSession(model_file, threads=threads, optimize=optimize, rss_marks=rss_marks)
    from tinydistill.compress.int4 import expand, expanded_model, has_expanded_layout

    if has_expanded_layout(manifest):
        with expanded_model(model_dir, manifest) as path:
            if rss_marks is not None:
                from tinydistill.compress.common import rss_kib

                rss_marks.append(("int4 expansion", rss_kib()))
            return CSession(path, threads=threads, optimize=optimize, rss_marks=rss_marks)
    return CSession(model_file, threads=threads, initializers=expand(model_dir, manifest), optimize=optimize,
                    rss_marks=rss_marks)


class CPredictor(TextPredictor):
    """Text -> decoded dict on ``CSession``: the same tokenizer, task encoding and decoding (and the same loop,
    ``TextPredictor``) as ``compress.predictor.Predictor``, but nothing in the process imports numpy or the
    onnxruntime package."""

    runtime = "onnxruntime-c"

    def __init__(self, model_dir, manifest: dict, session: CSession, tokenizer, task):
        self.model_dir, self.manifest, self.session = Path(model_dir), manifest, session
        self.tokenizer, self.task, self.heads = tokenizer, task, manifest["heads"]

    @classmethod
    def from_dir(cls, model_dir, runtime: str = "onnxruntime-c", threads: int = 1, data_dir=None,
                 task: str | None = None, rss_marks: list | None = None) -> "CPredictor":
        """``runtime``: always ``onnxruntime-c`` (the argument every runtime's predictor takes)."""
        from tinydistill.compress.common import build_task, read_manifest, rss_kib, runtime_of
        from tinydistill.compress.wordpiece import lean_tokenizer

        marks = rss_marks if rss_marks is not None else []

        model_dir = Path(model_dir)
        manifest = read_manifest(model_dir)
        if runtime_of(manifest, runtime) != cls.runtime:
            raise ValueError(f"{model_dir}: CPredictor runs on {cls.runtime!r}, not {runtime!r}")
        tokenizer = lean_tokenizer(model_dir, manifest["tokenizer"])
        marks.append(("tokenizer", rss_kib()))
        task_obj = build_task(manifest, data_dir=data_dir, task_name=task)
        if task_obj is None:
            raise ValueError(f"{model_dir / 'manifest.json'}: no task recorded; the C-API predictor decodes with it")
        marks.append(("task", rss_kib()))
        session = open_csession(model_dir, manifest, threads, rss_marks=marks)
        marks.append(("session (model)", rss_kib()))
        return cls(model_dir, manifest, session, tokenizer, task_obj)

    def encode(self, examples) -> list:
        return [self.task.encode(ex, self.tokenizer) for ex in examples]

    def collate(self, encoded) -> dict:
        length = max(len(e.input_ids) for e in encoded)
        pad = self.tokenizer.pad_token_id
        feed = {"input_ids": array("q"), "token_type_ids": array("q"), "attention_mask": array("q")}
        for e in encoded:
            extra = length - len(e.input_ids)
            feed["input_ids"].extend(list(e.input_ids) + [pad] * extra)
            feed["token_type_ids"].extend(list(e.token_type_ids) + [0] * extra)
            feed["attention_mask"].extend([1] * len(e.input_ids) + [0] * extra)
        return {k: (v, [len(encoded), length]) for k, v in feed.items()}

    def logits(self, feed: dict) -> dict:
        """Model only: collated feed -> {head: (flat float array, shape)}."""
        outputs = self.session.run(feed)
        return {h["name"]: out for h, out in zip(self.heads, outputs)}

    def decode(self, example, logits: dict, encoded) -> dict:
        return self.task.decode(example, logits, encoded)

    def row(self, output, head: dict, i: int, n_tokens: int):
        data, shape = output
        if head["kind"] == "token":  # [B, L, C] -> this example's real tokens, one row each
            length, classes = shape[1], shape[2]
            base = i * length * classes
            return [data[base + t * classes: base + (t + 1) * classes] for t in range(n_tokens)]
        return data[i * shape[1]:(i + 1) * shape[1]]  # [B, C]

    def as_array(self, output):
        """For ``tinydistill evaluate --runtime onnxruntime-c`` (the task's metric code is numpy's), not for the
        deployed process, which never calls this."""
        import numpy as np

        data, shape = output
        return np.frombuffer(data, dtype=np.float32).reshape(shape)

"""ONNX Runtime through its C API (ctypes), for a deployment process without numpy.

The Python ``onnxruntime`` package imports numpy (~23 MiB RSS) and its pybind module (~21 MiB): together with the
interpreter that is a ~60 MiB floor under every Python predictor, larger than a compressed nano model's own
share (~13-22 MiB), which is why the peak-RSS reduction of the ONNX Runtime predictor stops near -57 %.  The
wheel also ships the plain C library (``onnxruntime/capi/libonnxruntime.so.*``); calling it through ctypes
needs neither numpy nor the pybind module.  Measured on the nano SLU models of
``experiments/benchmarks/bench_compress.py`` with ``experiments/benchmarks/bench_capi_memory.py``.

Only what inference needs is bound: a session on a model file, int64 inputs, float32 outputs, as ``array``
buffers with a shape.  ``CPredictor`` is the end-to-end predictor on it (task encode/decode are pure Python):
``tinydistill predict|bench DIR --backend onnxruntime-c``.
"""
from __future__ import annotations

import ctypes as C
import importlib.util
from array import array
from pathlib import Path

# Indices into the OrtApi function table (append-only, stable across releases; onnxruntime_c_api.h).
_IDX = dict(GetErrorMessage=2, CreateEnv=3, CreateSession=7, Run=9, CreateSessionOptions=10,
            SetSessionExecutionMode=13, SetIntraOpNumThreads=24, SetInterOpNumThreads=25,
            SessionGetInputCount=30, SessionGetOutputCount=31, SessionGetInputName=36, SessionGetOutputName=37,
            CreateTensorWithDataAsOrtValue=49, GetTensorMutableData=51, GetDimensionsCount=61, GetDimensions=62,
            GetTensorTypeAndShape=65, CreateCpuMemoryInfo=69, AllocatorFree=76,
            GetAllocatorWithDefaultOptions=78, ReleaseStatus=93, ReleaseValue=96,
            ReleaseTensorTypeAndShapeInfo=99)
_P = C.c_void_p
_SIG = dict(
    GetErrorMessage=(C.c_char_p, [_P]), CreateEnv=(_P, [C.c_int, C.c_char_p, C.POINTER(_P)]),
    CreateSession=(_P, [_P, C.c_char_p, _P, C.POINTER(_P)]),
    Run=(_P, [_P, _P, C.POINTER(C.c_char_p), C.POINTER(_P), C.c_size_t, C.POINTER(C.c_char_p), C.c_size_t,
              C.POINTER(_P)]),
    CreateSessionOptions=(_P, [C.POINTER(_P)]), SetSessionExecutionMode=(_P, [_P, C.c_int]),
    SetIntraOpNumThreads=(_P, [_P, C.c_int]), SetInterOpNumThreads=(_P, [_P, C.c_int]),
    SessionGetInputCount=(_P, [_P, C.POINTER(C.c_size_t)]), SessionGetOutputCount=(_P, [_P, C.POINTER(C.c_size_t)]),
    SessionGetInputName=(_P, [_P, C.c_size_t, _P, C.POINTER(_P)]),
    SessionGetOutputName=(_P, [_P, C.c_size_t, _P, C.POINTER(_P)]),
    CreateTensorWithDataAsOrtValue=(_P, [_P, _P, C.c_size_t, C.POINTER(C.c_int64), C.c_size_t, C.c_int,
                                         C.POINTER(_P)]),
    GetTensorMutableData=(_P, [_P, C.POINTER(_P)]), GetDimensionsCount=(_P, [_P, C.POINTER(C.c_size_t)]),
    GetDimensions=(_P, [_P, C.POINTER(C.c_int64), C.c_size_t]), GetTensorTypeAndShape=(_P, [_P, C.POINTER(_P)]),
    CreateCpuMemoryInfo=(_P, [C.c_int, C.c_int, C.POINTER(_P)]), AllocatorFree=(_P, [_P, _P]),
    GetAllocatorWithDefaultOptions=(_P, [C.POINTER(_P)]), ReleaseStatus=(None, [_P]), ReleaseValue=(None, [_P]),
    ReleaseTensorTypeAndShapeInfo=(None, [_P]))
_INT64, _FLOAT = 7, 1  # ONNXTensorElementDataType


class _ApiBase(C.Structure):
    _fields_ = [("GetApi", C.CFUNCTYPE(_P, C.c_uint32)), ("GetVersionString", C.CFUNCTYPE(C.c_char_p))]


def _library() -> Path:
    spec = importlib.util.find_spec("onnxruntime")  # locates the wheel without importing it (or numpy)
    libs = sorted((Path(spec.origin).parent / "capi").glob("libonnxruntime.so*"))
    if not libs:
        raise OSError("libonnxruntime.so not found in the onnxruntime package")
    return libs[0]


class _Api:
    def __init__(self):
        lib = C.CDLL(str(_library()))
        lib.OrtGetApiBase.restype = C.POINTER(_ApiBase)
        base = lib.OrtGetApiBase().contents
        self.version = base.GetVersionString().decode()
        table = None
        for version in range(23, 0, -1):  # the newest API version this library serves
            table = base.GetApi(version)
            if table:
                break
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
    """An inference session; ``run({name: (array('q'), shape)}) -> [(array('f'), shape), ...]``."""

    def __init__(self, path, threads: int = 1):
        a = self.a = api()
        self.env, opts = _P(), _P()
        a.check(a.CreateEnv(3, b"tinydistill", C.byref(self.env)))
        a.check(a.CreateSessionOptions(C.byref(opts)))
        a.check(a.SetIntraOpNumThreads(opts, threads))
        a.check(a.SetInterOpNumThreads(opts, 1))
        a.check(a.SetSessionExecutionMode(opts, 0))
        self.session = _P()
        a.check(a.CreateSession(self.env, str(path).encode(), opts, C.byref(self.session)))
        self.mem = _P()
        a.check(a.CreateCpuMemoryInfo(1, 0, C.byref(self.mem)))
        alloc = _P()
        a.check(a.GetAllocatorWithDefaultOptions(C.byref(alloc)))
        self.input_names = self._names(a.SessionGetInputCount, a.SessionGetInputName, alloc)
        self.output_names = self._names(a.SessionGetOutputCount, a.SessionGetOutputName, alloc)

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
            in_names = (C.c_char_p * len(values))(*(n.encode() for n in self.input_names))
            out_names = (C.c_char_p * len(outs))(*(n.encode() for n in self.output_names))
            a.check(a.Run(self.session, None, in_names, (_P * len(values))(*values), len(values), out_names,
                          len(outs), outs))
            return [self._read(_P(o)) for o in outs]
        finally:
            for v in values:
                a.ReleaseValue(v)

    def _read(self, value):
        a = self.a
        try:
            info, n = _P(), C.c_size_t()
            a.check(a.GetTensorTypeAndShape(value, C.byref(info)))
            a.check(a.GetDimensionsCount(info, C.byref(n)))
            dims = (C.c_int64 * n.value)()
            a.check(a.GetDimensions(info, dims, n.value))
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
        finally:
            a.ReleaseValue(value)


class CPredictor:
    """Text -> decoded dict on ``CSession``: the same tokenizer, task encoding and decoding as
    ``compress.predictor.Predictor``, but nothing in the process imports numpy or the onnxruntime package."""

    runtime = "onnxruntime-c"

    def __init__(self, model_dir, manifest: dict, session: CSession, tokenizer, task):
        self.model_dir, self.manifest, self.session = Path(model_dir), manifest, session
        self.tokenizer, self.task, self.heads = tokenizer, task, manifest["heads"]

    @classmethod
    def from_dir(cls, model_dir, threads: int = 1, data_dir=None, task: str | None = None) -> "CPredictor":
        from compress.common import build_task, read_manifest
        from tasks.tokenization import load_tokenizer

        model_dir = Path(model_dir)
        manifest = read_manifest(model_dir)
        if manifest.get("format") not in ("onnx", "ort"):
            raise ValueError(f"{model_dir}: the onnxruntime-c backend runs ONNX exports, not {manifest.get('format')!r}")
        task_obj = build_task(manifest, data_dir=data_dir, task_name=task)
        if task_obj is None:
            raise ValueError(f"{model_dir / 'manifest.json'}: no task recorded; the C-API predictor decodes with it")
        tokenizer = load_tokenizer(model_dir, manifest["tokenizer"])
        session = CSession(model_dir / manifest.get("model_file", "model.onnx"), threads=threads)
        return cls(model_dir, manifest, session, tokenizer, task_obj)

    def examples(self, texts) -> list:
        from tasks.base import Example

        return [t if isinstance(t, Example) else Example(text=str(t)) for t in texts]

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

    def predict(self, texts, batch_size: int = 32) -> list[dict]:
        examples = self.examples(texts)
        results = []
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            encoded = self.encode(chunk)
            raw = self.logits(self.collate(encoded))
            for i, (ex, enc) in enumerate(zip(chunk, encoded)):
                one = {}
                for head in self.heads:
                    data, shape = raw[head["name"]]
                    if head["kind"] == "token":  # [B, L, C] -> this example's real tokens, one row each
                        length, classes = shape[1], shape[2]
                        base = i * length * classes
                        one[head["name"]] = [data[base + t * classes: base + (t + 1) * classes]
                                             for t in range(len(enc.input_ids))]
                    else:  # [B, C]
                        one[head["name"]] = data[i * shape[1]:(i + 1) * shape[1]]
                results.append(self.task.decode(ex, one, enc))
        return results

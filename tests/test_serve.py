"""``tinydistill serve``: a real server process on a tiny exported ONNX model (good and bad requests, concurrent
requests batched, no paddle or numpy in the process, clean stop), and the batching / failure paths in-process."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tinydistill import distill  # noqa: F401 - before paddle: pins the legacy program format that export needs

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["播放周杰伦的稻香", "导航去北京西站", "给妈妈打电话", "下一首", "取消导航", "打开地图"]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, data_dir):
    """A tiny untrained Bi-LSTM SLU model (intent + slots) exported to ONNX: serving does not care what the weights
    learnt, and unlike ERNIE it needs no paddlenlp import (~8 s of a loaded machine)."""
    import paddle

    from tinydistill.compress.export import export
    from tinydistill.tasks import build_task
    from tinydistill.tasks.tokenization import CharTokenizer
    from tinydistill.teachers.base import build_model, save_model_dir

    slu = build_task("nlpcc2018_slu", max_seq_length=16, data_dir=str(data_dir))
    tok = CharTokenizer.build(slu.texts("train")[:2000])
    paddle.seed(0)
    model = build_model("student", "bilstm", slu.heads(), vocab_size=tok.vocab_size, embedding_size=16,
                        hidden_size=8, mlp_size=8)
    root = tmp_path_factory.mktemp("serve")
    save_model_dir(root / "dygraph", model, tok, task=slu)
    export(root / "dygraph", "onnx", root / "onnx", data_dir=str(data_dir), max_check_examples=64)
    return root / "onnx"


def _request(port, method, path, body=None, headers=None, raw=False, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body, ensure_ascii=False).encode()
    c.request(method, path, body=data, headers=headers or {})
    r = c.getresponse()
    payload = r.read()
    if conn is None:
        c.close()
    text = payload.decode()
    assert "\n" not in text.strip(), text  # one line
    return r.status, (text if raw else json.loads(text))


def _raw(port, data: bytes) -> str:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode()


@pytest.fixture(scope="module")
def server(onnx_dir):
    proc = subprocess.Popen([sys.executable, "-m", "tinydistill.experiments.cli", "serve", str(onnx_dir), "--port", "0",
                             "--max-texts", "8", "--max-text-chars", "40", "--max-body-bytes", "4000",
                             "--max-batch", "8", "--batch-window-ms", "5"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    assert "serving" in line and "onnxruntime-c" in line, line + (proc.stdout.read() if proc.poll() is not None else "")
    port = int(line.rsplit("http://127.0.0.1:", 1)[1].split()[0])
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_serve_good_and_bad_requests_and_stop(server, onnx_dir, data_dir):
    from tinydistill.compress.predictors import open_predictor

    proc, port = server
    status, health = _request(port, "GET", "/health")
    assert status == 200 and health["status"] == "ok"
    status, meta = _request(port, "GET", "/metadata")
    assert status == 200 and meta["task"] == "nlpcc2018_slu" and meta["format"] == "onnx"
    assert meta["runtime"] == "onnxruntime-c" and meta["size_bytes"] > 0
    assert [h["name"] for h in meta["heads"]] == ["intent", "slot"] and "music.play" in meta["heads"][0]["labels"]

    # the same decoded outputs as the predictor in this process (padding in a batch changes floats in the last bits)
    expected = open_predictor(onnx_dir, backend="onnxruntime-c", data_dir=str(data_dir)).predict(TEXTS)
    status, out = _request(port, "POST", "/predict", {"texts": TEXTS[:3]})
    assert status == 200 and len(out["predictions"]) == 3

    def same(a, b):
        return a["intent"] == b["intent"] and a["slots"] == b["slots"] and abs(a["confidence"] - b["confidence"]) < 1e-4

    assert all(same(a, b) for a, b in zip(out["predictions"], expected))

    # concurrent single-text requests on kept-alive connections are micro-batched and answered in order
    def client(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        results = [_request(port, "POST", "/predict", {"texts": [TEXTS[(k + i) % 6]]}, conn=conn) for i in range(6)]
        conn.close()
        return k, results

    with ThreadPoolExecutor(12) as pool:
        for k, results in pool.map(client, range(12)):
            for i, (status, body) in enumerate(results):
                assert status == 200 and same(body["predictions"][0], expected[(k + i) % 6])
    _, health = _request(port, "GET", "/health")
    assert health["batched_texts"] >= 75 and health["batches"] < health["batched_texts"]  # some calls held several

    bad = [
        (b'{"texts": ["a"', 400, "bad JSON"), (b"\xff\xfe", 400, "UTF-8"), ({"text": ["a"]}, 400, "texts"),
        ({"texts": "abc"}, 400, "list of strings"), ({"texts": [1]}, 400, "list of strings"), ([], 400, "object"),
        ({"texts": []}, 400, "empty"), ({"texts": ["a"] * 9}, 413, "at most 8"),
        ({"texts": ["a", "长" * 41]}, 413, "texts[1]"), ({"texts": ["a" * 30] * 200}, 413, "body"),
    ]
    for body, code, word in bad:
        status, err = _request(port, "POST", "/predict", body)
        assert status == code and word in err["error"], (body, status, err)
    assert _request(port, "POST", "/nope", {"texts": ["a"]})[0] == 404
    assert _request(port, "GET", "/predict")[0] == 405
    assert _request(port, "DELETE", "/predict")[0] == 405
    # no Content-Length; a malformed request line: JSON too, and the connection is closed
    assert _raw(port, b"POST /predict HTTP/1.1\r\nHost: x\r\n\r\n").startswith("HTTP/1.1 411")
    reply = _raw(port, b"GARBAGE\r\n\r\n")
    assert reply.startswith("HTTP/1.1 400") and reply.endswith('"}')
    # still serving after all that
    assert _request(port, "POST", "/predict", {"texts": ["下一首"]})[0] == 200

    # the lean process: neither paddle nor numpy was loaded
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    assert "libpaddle" not in maps and "numpy" not in maps

    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0 and "stopped after" in rest, rest


class _Slow:
    def __init__(self, seconds):
        self.seconds = seconds

    def __call__(self, texts):
        time.sleep(self.seconds)
        return [{"n": len(t)} for t in texts]


def test_batcher_groups_isolates_failures_and_refuses_overload():
    from tinydistill.compress.microbatch import Batcher, Refused

    calls = []

    def run(texts):
        calls.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("model broke")
        return [{"text": t} for t in texts]

    t0 = time.monotonic()
    b = Batcher([run], max_batch=4, window_s=5.0)
    with b.arriving():  # a request still being read: the worker holding "a" waits for it (not for 5 s)
        jobs = [b.submit(t) for t in (["a"], ["boom"])]
        time.sleep(0.05)
        jobs.append(b.submit(["c", "d"]))
    assert all(j.done.wait(5) for j in jobs)
    assert calls[0] == ["a", "boom", "c", "d"]  # one model call for the three requests ...
    assert jobs[2].done.wait(0) and time.monotonic() - t0 < 2
    assert jobs[0].result == [{"text": "a"}] and jobs[2].result == [{"text": "c"}, {"text": "d"}]
    assert isinstance(jobs[1].error, RuntimeError) and jobs[1].result is None  # ... only the bad one fails
    big = b.submit(list("abcdefgh"))  # larger than max_batch: runs alone, the runner chunks it
    assert big.done.wait(5) and len(big.result) == 8
    t0 = time.monotonic()
    alone = b.submit(["e"])  # nothing else arriving: runs at once, the 5 s window is not waited out
    assert alone.done.wait(2) and time.monotonic() - t0 < 1
    b.close()
    with pytest.raises(Refused) as exc:
        b.submit(["x"])
    assert not exc.value.retry and "shutting down" in exc.value.message

    slow = Batcher([_Slow(0.5)], max_batch=1, window_s=0, max_queued=2)
    first = slow.submit(["a"])
    time.sleep(0.1)  # the worker holds "a"; two more fill the queue
    slow.submit(["b"])
    slow.submit(["c"])
    with pytest.raises(Refused) as exc:  # the server answers 503 with Retry-After
        slow.submit(["d"])
    assert exc.value.retry and "overloaded" in exc.value.message
    assert first.done.wait(5)
    slow.close()


def test_model_failure_is_500_and_a_hung_model_504(onnx_dir, data_dir):
    from tinydistill.compress.microbatch import Batcher
    from tinydistill.compress.serve import Service, make_server

    service = Service(onnx_dir, max_batch=4, timeout_s=0.5, data_dir=str(data_dir))
    service.batcher.close()

    def broken(texts):
        raise RuntimeError("onnxruntime: bad\nthings")

    server = make_server(service, port=0)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        service.batcher = Batcher([broken], max_batch=4)
        status, err = _request(port, "POST", "/predict", {"texts": ["下一首"]})
        assert status == 500 and err["error"] == "model failed: RuntimeError: onnxruntime: bad things"
        service.batcher.close()
        service.batcher = Batcher([_Slow(2.0)], max_batch=4)
        t0 = time.monotonic()
        status, err = _request(port, "POST", "/predict", {"texts": ["下一首"]})
        assert status == 504 and time.monotonic() - t0 < 1.9
        assert _request(port, "GET", "/health")[1]["errors"] == 2
    finally:
        server.shutdown()
        server.server_close()
        service.batcher.close()

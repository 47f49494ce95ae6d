"""Data sets: resolution order, real downloads from a local HTTP server, ``tinydistill data``."""
from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest

from tinydistill.experiments.cli import main
from tinydistill.tasks import datasets
from tinydistill.tasks.datasets import Dataset, DownloadError, Source, fetch, resolve_data_dir

TRAIN = "label\ttext_a\n1\t很好\n0\t太差了\n"
DEV = "qid\tlabel\ttext_a\n0\t1\t不错\n"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("Toy/", "")
        zf.writestr("Toy/train.tsv", TRAIN)
        zf.writestr("Toy/dev.tsv", DEV)
        zf.writestr("Toy/README", "not extracted")
    return buf.getvalue()


class Server:
    """Serves ``routes[path] = (body, declared_length)`` on 127.0.0.1 and counts requests."""

    def __init__(self):
        self.routes: dict[str, tuple[bytes, int]] = {}
        self.hits: list[str] = []
        routes, hits = self.routes, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hits.append(self.path)
                if self.path not in routes:
                    self.send_error(404)
                    return
                body, length = routes[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def toy_dataset(server: Server, archive_checksum=None, file_checksums=None, truncate=False) -> Dataset:
    blob = make_zip()
    server.routes["/Toy.zip"] = (blob, len(blob) + (1000 if truncate else 0))
    labels = b"0\n1\n"
    server.routes["/labels.txt"] = (labels, len(labels))
    files = {"train.tsv": sha(TRAIN.encode()), "dev.tsv": sha(DEV.encode()), "labels.txt": sha(labels)}
    files.update(file_checksums or {})
    return Dataset(
        name="toy", summary="toy", task="chnsenticorp",
        sources=(Source(server.url("/Toy.zip"), archive_checksum if archive_checksum is not None else sha(blob),
                        {"train.tsv": "train.tsv", "dev.tsv": "dev.tsv"}),
                 Source(server.url("/labels.txt"), sha(labels), {"labels.txt": None})),
        files=files, required=("train.tsv", "dev.tsv", "labels.txt"))


def test_fetch_success_verifies_and_extracts(server, tmp_path):
    ds = toy_dataset(server)
    folder = fetch(ds, tmp_path)
    assert folder == tmp_path / "toy"
    assert (folder / "train.tsv").read_text(encoding="utf-8") == TRAIN
    assert (folder / "dev.tsv").read_text(encoding="utf-8") == DEV
    assert (folder / "labels.txt").read_bytes() == b"0\n1\n"
    assert sorted(p.name for p in folder.iterdir()) == ["dev.tsv", "labels.txt", "train.tsv"]
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]  # no temporary files left


def test_checksum_mismatch_fails_and_leaves_nothing(server, tmp_path):
    ds = toy_dataset(server, archive_checksum="sha256:" + "0" * 64)
    with pytest.raises(DownloadError) as exc:
        fetch(ds, tmp_path)
    msg = str(exc.value)
    assert server.url("/Toy.zip") in msg and "checksum mismatch" in msg
    assert "0" * 64 in msg and sha(make_zip()) in msg  # expected and actual
    assert list(tmp_path.iterdir()) == []


def test_extracted_file_checksum_is_verified(server, tmp_path):
    ds = toy_dataset(server, file_checksums={"dev.tsv": "sha256:" + "1" * 64})
    with pytest.raises(DownloadError, match=r"extracted dev\.tsv: checksum mismatch"):
        fetch(ds, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_truncated_download_fails_and_leaves_nothing(server, tmp_path):
    ds = toy_dataset(server, truncate=True)
    with pytest.raises(DownloadError) as exc:
        fetch(ds, tmp_path)
    assert server.url("/Toy.zip") in str(exc.value) and "truncated" in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_a_download_error(server, tmp_path):
    ds = toy_dataset(server)
    del server.routes["/labels.txt"]
    with pytest.raises(DownloadError, match="404"):
        fetch(ds, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_resolution_order_and_cache_download(server, tmp_path, monkeypatch):
    ds = toy_dataset(server)
    monkeypatch.setitem(datasets.DATASETS, "toy", ds)
    cache = tmp_path / "cache"
    monkeypatch.setenv("TINYDISTILL_CACHE", str(cache))
    monkeypatch.delenv("TINYDISTILL_DATA", raising=False)
    # 3. cache: downloaded once, then reused
    assert resolve_data_dir("toy") == cache / "data" / "toy"
    assert resolve_data_dir("toy") == cache / "data" / "toy"
    assert server.hits == ["/Toy.zip", "/labels.txt"]
    # 2. $TINYDISTILL_DATA beats the cache; 1. an explicit directory beats both
    env_dir, explicit = tmp_path / "env", tmp_path / "explicit"
    for root in (env_dir, explicit):
        (root / "toy").mkdir(parents=True)
        for name in ds.required:
            (root / "toy" / name).write_text("x")
    monkeypatch.setenv("TINYDISTILL_DATA", str(env_dir))
    assert resolve_data_dir("toy") == env_dir / "toy"
    assert resolve_data_dir("toy", explicit) == explicit / "toy"
    assert resolve_data_dir("toy", explicit / "toy") == explicit / "toy"  # the data set folder itself
    # a local directory without the files is an error naming it, never a download
    with pytest.raises(FileNotFoundError, match="data fetch toy"):
        resolve_data_dir("toy", tmp_path / "empty")
    assert len(server.hits) == 2


def test_resolve_accepts_task_names(data_dir):
    assert resolve_data_dir("nlpcc2018_slu", data_dir) == data_dir / "nlpcc2018_task4"
    assert resolve_data_dir("chnsenticorp", data_dir) == data_dir / "chnsenticorp"
    with pytest.raises(FileNotFoundError, match="unknown data set"):
        resolve_data_dir("nope", data_dir)


def test_real_files_match_recorded_checksums(data_dir):
    for ds in datasets.DATASETS.values():
        for name in ds.required:
            expected = ds.files[name]
            assert datasets.file_checksum(data_dir / ds.name / name, expected.split(":")[0]) == expected


def test_cli_data_check_counts(data_dir, capsys):
    assert main(["data", "check", "chnsenticorp", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "train: 9,600 examples" in out and "dev: 1,200 examples" in out and "checksum ok" in out
    assert main(["data", "check", "nlpcc2018_slu", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "utterances: 21,352 in 4,705 sessions" in out
    assert "11 intents, 32 slot tags" in out
    assert "train 17,129 utterances / 3,764 sessions, dev 4,223 utterances / 941 sessions" in out
    # another seed gives another split; the same seed the same one
    assert main(["data", "check", "nlpcc2018_task4", "--data-dir", str(data_dir), "--split-seed", "7"]) == 0
    assert "seed 7" in capsys.readouterr().out


def test_cli_data_list_and_errors(data_dir, tmp_path, capsys):
    assert main(["data", "list", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "https://bj.bcebos.com/paddlenlp/datasets/ChnSentiCorp.zip" in out
    assert "trainingdata04.zip" in out and str(data_dir / "chnsenticorp") in out
    assert main(["data", "check", "chnsenticorp", "--data-dir", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["data", "check", "chnsenticorp", "--data-dir", str(data_dir), "--split-seed", "3"]) == 2
    assert "no seeded train/dev split" in capsys.readouterr().err


def test_cli_data_fetch_downloads_into_the_cache(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(datasets.DATASETS, "toy", toy_dataset(server))
    monkeypatch.setenv("TINYDISTILL_CACHE", str(tmp_path))
    monkeypatch.delenv("TINYDISTILL_DATA", raising=False)
    assert main(["data", "fetch", "toy"]) == 0
    assert (tmp_path / "data" / "toy" / "train.tsv").read_text(encoding="utf-8") == TRAIN
    assert main(["data", "fetch", "toy"]) == 0  # already there: no second download
    assert len(server.hits) == 2 and "ready in" in capsys.readouterr().out
    monkeypatch.setitem(datasets.DATASETS, "toy", toy_dataset(server, archive_checksum="md5:" + "0" * 32))
    (tmp_path / "data" / "toy" / "train.tsv").unlink()
    assert main(["data", "fetch", "toy"]) == 1  # DownloadError: one line, exit 1 (failed, not bad input)
    assert "checksum mismatch" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["toy"]  # old folder kept, no temp dirs

"""Data sets: official sources, checksums, the download cache and ``tinydistill data`` (no paddle).

Where a task's files come from (``resolve_data_dir``), first match wins:

1. an explicit directory (``--data-dir``, ``task.data_dir``),
2. ``$TINYDISTILL_DATA``,
3. the download cache ``$TINYDISTILL_CACHE/data`` (default ``~/.cache/tinydistill/data``), downloading
   from the official source if the files are missing.

A data directory holds one folder per data set: ``<dir>/chnsenticorp/{train,dev}.tsv`` and
``<dir>/nlpcc2018_task4/{corpus.train.txt,intent_label.txt,slot_label.txt}`` (the layout of the
official downloads).  Downloads stream to a temporary file, are checked against the Content-Length and
the recorded checksums, and the data set folder is renamed into place only when complete: a failed
download leaves nothing behind in the cache.
"""
from __future__ import annotations

import os
# hashlib, shutil, tempfile and zipfile are imported by the functions that download and unpack: a predictor
# process imports this module (through its task) and downloads nothing
from pathlib import Path

from tinydistill.distill.fsutil import atomic_dir, cache_dir
from tinydistill.distill.logs import progress
from tinydistill.distill.records import field, fields, record
from tinydistill.distill.registry import Registry, RegistryError

CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A download failed or its content does not match the recorded checksum."""


@record(frozen=True)
class Source:
    """One download.  ``checksum`` ("md5:..."/"sha256:...") is of the downloaded file itself (the archive
    for a zip; None where no trusted figure is known).  ``members`` maps each file the data set folder
    gets to its base name inside the zip (None: the download is that file)."""

    url: str
    checksum: str | None
    members: dict[str, str | None]


@record(frozen=True)
class Dataset:
    name: str
    summary: str
    task: str
    sources: tuple[Source, ...]
    #: checksums of the extracted files (verified after every download; ``data check`` reports them)
    files: dict[str, str]
    #: files a usable local copy must have (others, e.g. a test split, are optional)
    required: tuple[str, ...]
    licence: str = ""
    aliases: tuple[str, ...] = field(default=())


# Checksum provenance (be precise about what each figure is of):
# * ChnSentiCorp: the archive MD5 and the per-file MD5s of train/dev/test.tsv are the figures PaddleNLP
#   publishes in paddlenlp/datasets/chnsenticorp.py; the train/dev MD5s equal those of the copies in
#   ../shared/data/chnsenticorp, whose SHA-256 is recorded too (computed here).
# * NLPCC 2018 task 4: no checksum of the organisers' trainingdata04.zip is known, so the archive is not
#   checked; the extracted corpus.train.txt is checked against the SHA-256 of ../shared/data's copy
#   (which its provenance note calls identical to the organisers' file "as far as can be told").  The
#   label files' SHA-256 are those of ../shared/data's copies of PaddleNLP's files.  If an official file
#   ever differs, the download fails with both checksums and the URL; point --data-dir at local files then.
#: data sets by name; a task that reads one and the data set's own aliases are its aliases
DATASETS = Registry("data set")
for _ds in (
    Dataset(
        name="chnsenticorp",
        summary="ChnSentiCorp binary sentiment (PaddleNLP split: train 9,600, dev 1,200, test 1,200)",
        task="chnsenticorp",
        sources=(Source("https://bj.bcebos.com/paddlenlp/datasets/ChnSentiCorp.zip",
                        "md5:7ef61b08ad10fbddf2ba97613f071561",
                        {"train.tsv": "train.tsv", "dev.tsv": "dev.tsv", "test.tsv": "test.tsv"}),),
        files={
            "train.tsv": "sha256:0b2653c23e5c79f539472e90cb10522f0ada4b80d3da95572d8b48fda47d5b33",
            "dev.tsv": "sha256:83cc6779a1c12517120dab421ca69d22e48ea0fef72d40ea7f0d5c4cff53f603",
            "test.tsv": "md5:9b4dc7d1e4ada48c645b7e938592f49c",
        },
        required=("train.tsv", "dev.tsv"),
        licence="LUGE agreement: non-commercial research and teaching only",
    ),
    Dataset(
        name="nlpcc2018_task4",
        summary="NLPCC 2018 task 4 in-car SLU corpus (21,352 utterances, 4,705 sessions) + PaddleNLP label files",
        task="nlpcc2018_slu",
        sources=(
            Source("http://tcci.ccf.org.cn/conference/2018/dldoc/trainingdata04.zip", None,
                   {"corpus.train.txt": "corpus.train.txt"}),
            Source("https://raw.githubusercontent.com/PaddlePaddle/PaddleNLP/develop/model_zoo/ernie-tiny/data/"
                   "intent_label.txt", "sha256:e18b8450fa3dcfbe791145c00776e918836a0d725e3b90715fbbeeef6d9d9ca6",
                   {"intent_label.txt": None}),
            Source("https://raw.githubusercontent.com/PaddlePaddle/PaddleNLP/develop/model_zoo/ernie-tiny/data/"
                   "slot_label.txt", "sha256:d91a9208c82ec08dcfcf9e811fd801b9ed356b6581970d5e4986664818109c7e",
                   {"slot_label.txt": None}),
        ),
        files={
            "corpus.train.txt": "sha256:9dc246def423fec620596ea3ce770ca2db8dd9c87d258e0f076ceb069dde84e9",
            "intent_label.txt": "sha256:e18b8450fa3dcfbe791145c00776e918836a0d725e3b90715fbbeeef6d9d9ca6",
            "slot_label.txt": "sha256:d91a9208c82ec08dcfcf9e811fd801b9ed356b6581970d5e4986664818109c7e",
        },
        required=("corpus.train.txt", "intent_label.txt", "slot_label.txt"),
        licence="NLPCC 2018 shared task data (research use); label files Apache-2.0 (PaddleNLP)",
        aliases=("nlpcc2018",),
    ),
):
    DATASETS.add(_ds.name, _ds, summary=_ds.summary, task=_ds.task,
                 aliases=tuple(dict.fromkeys(a for a in (_ds.task, *_ds.aliases) if a != _ds.name)))


def get_dataset(name: str) -> Dataset:
    """A data set by its name, alias or the name of a task that reads it."""
    try:
        return DATASETS.get(name)
    except RegistryError as exc:  # a missing data set is a missing file to the CLI (one line, exit 2)
        raise FileNotFoundError(str(exc)) from None


def cache_root() -> Path:
    return cache_dir("data")


def file_checksum(path: str | Path, algo: str = "sha256") -> str:
    import hashlib

    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return f"{algo}:{h.hexdigest()}"


def _missing(folder: Path, ds: Dataset) -> list[str]:
    return [f for f in ds.required if not (folder / f).is_file()]


def resolve_data_dir(dataset: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder holding ``dataset``'s files (``<root>/<dataset name>``; see the module docstring).

    ``data_dir`` may be the root of a data directory or the data set folder itself.  Explicit and
    ``$TINYDISTILL_DATA`` directories are never downloaded into; the cache is (unless ``download`` is
    false).  Missing files raise ``FileNotFoundError`` naming the directory and the files.
    """
    ds = get_dataset(dataset)
    root = data_dir if data_dir is not None else os.environ.get("TINYDISTILL_DATA")
    if root is not None:
        root = Path(root).expanduser()
        for folder in (root / ds.name, root):
            if not _missing(folder, ds):
                return folder
        raise FileNotFoundError(
            f"{root / ds.name}: data set {ds.name!r} not found (needs {', '.join(ds.required)}); "
            f"run `tinydistill data fetch {ds.name}` to download it to the cache, or point --data-dir elsewhere")
    folder = cache_root() / ds.name
    if _missing(folder, ds):
        if not download:
            raise FileNotFoundError(f"{folder}: data set {ds.name!r} is not in the cache "
                                    f"(run `tinydistill data fetch {ds.name}`)")
        fetch(ds, cache_root())
    return folder


# -- downloading --------------------------------------------------------------------------------
def download(url: str, target: Path, checksum: str | None = None, timeout: float = 60.0) -> None:
    """Stream ``url`` to ``target``; verify length and checksum, else ``DownloadError`` (and no ``target``)."""
    # imported here: a deployed predictor reads tasks/ but never downloads (ssl + urllib cost ~3 MiB RSS)
    import hashlib
    import http.client
    import urllib.error
    import urllib.request

    algo = checksum.split(":", 1)[0] if checksum else "sha256"
    h = hashlib.new(algo)
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(target, "wb") as out:
            expected_len = resp.headers.get("Content-Length")
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except http.client.IncompleteRead as exc:
                    got += len(exc.partial)
                    break
                if not chunk:
                    break
                got += len(chunk)
                h.update(chunk)
                out.write(chunk)
        if expected_len is not None and got != int(expected_len):
            raise DownloadError(f"{url}: truncated download: received {got} of {int(expected_len)} bytes")
        actual = f"{algo}:{h.hexdigest()}"
        if checksum and actual != checksum:
            raise DownloadError(f"{url}: checksum mismatch: expected {checksum}, got {actual}")
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        target.unlink(missing_ok=True)
        raise DownloadError(f"{url}: download failed: {exc}") from None
    except DownloadError:
        target.unlink(missing_ok=True)
        raise


def _extract(archive: Path, members: dict[str, str | None], out_dir: Path, url: str) -> None:
    import shutil
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zf:
            by_base: dict[str, list[str]] = {}
            for info in zf.infolist():
                if not info.is_dir():
                    by_base.setdefault(info.filename.rsplit("/", 1)[-1], []).append(info.filename)
            for target, base in members.items():
                found = by_base.get(base or target, [])
                if len(found) != 1:
                    what = "not found" if not found else f"ambiguous ({', '.join(found)})"
                    raise DownloadError(f"{url}: archive member {base!r} {what}")
                with zf.open(found[0]) as src, open(out_dir / target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{url}: not a valid zip archive: {exc}") from None


def fetch(ds: Dataset | str, root: str | os.PathLike | None = None) -> Path:
    """Download ``ds`` into ``<root>/<name>`` (default root: the cache), verifying every checksum.

    The folder is assembled under a temporary name and renamed into place when complete.
    """
    import tempfile

    ds = get_dataset(ds) if isinstance(ds, str) else ds
    root = Path(root) if root is not None else cache_root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / ds.name
    with atomic_dir(target) as tmp, tempfile.TemporaryDirectory(prefix=".download.", dir=root) as dl:
        for i, src in enumerate(ds.sources):
            single = list(src.members.values()) == [None]
            file = tmp / next(iter(src.members)) if single else Path(dl) / f"source{i}"
            download(src.url, file, src.checksum)
            if not single:
                _extract(file, src.members, tmp, src.url)
                file.unlink()
        for name in (n for s in ds.sources for n in s.members):
            expected = ds.files.get(name)
            if expected:
                actual = file_checksum(tmp / name, expected.split(":", 1)[0])
                if actual != expected:
                    url = next(s.url for s in ds.sources if name in s.members)
                    raise DownloadError(f"{url}: extracted {name}: checksum mismatch: expected {expected}, "
                                        f"got {actual}")
    return target


# -- tinydistill data ---------------------------------------------------------------------------
def _check_files(folder: Path, ds: Dataset) -> list[str]:
    lines = []
    for name, expected in ds.files.items():
        path = folder / name
        if not path.is_file():
            lines.append(f"  {name:<18} {'missing' if name in ds.required else 'absent (optional)'}")
            continue
        actual = file_checksum(path, expected.split(":", 1)[0])
        status = "checksum ok" if actual == expected else f"checksum differs from the official file ({actual})"
        lines.append(f"  {name:<18} {path.stat().st_size:>10,} bytes  {status}")
    return lines


def check_dataset(ds: Dataset, data_dir: str | None = None, split_seed: int | None = None) -> list[str]:
    """Read every row through the task's reader and report counts (raises ``DataError`` on a bad row)."""
    from tinydistill.tasks import TASKS

    folder = resolve_data_dir(ds.name, data_dir, download=False)
    options = {"data_dir": str(folder)}
    if split_seed is not None:
        options["split_seed"] = split_seed
    cls = TASKS.get(ds.task)
    if split_seed is not None and "split_seed" not in {f.name for f in fields(cls.Options)}:
        from tinydistill.distill.schema import ConfigError

        raise ConfigError(f"--split-seed: task {ds.task!r} has no seeded train/dev split")
    task = cls(**options)
    empty = [split for split in ("train", "dev") if not task.load(split)]
    if empty:  # readable but useless: a run on it would fail later, or train on nothing
        from tinydistill.tasks.base import DataError

        raise DataError(folder, None, f"no examples in the {' and '.join(empty)} split (empty files, or only "
                                      "headers and blank lines); restore the data set's files")
    return [f"{ds.name}: {folder}", *_check_files(folder, ds), *task.data_summary(), *_overlap(task)]


def _overlap(task) -> list[str]:
    from tinydistill.tasks.overlap import overlap_lines

    splits = {"train": task.load("train"), "dev": task.load("dev")}
    try:
        splits["test"] = task.load("test")
    except FileNotFoundError:  # the test split is optional
        pass
    return overlap_lines(splits)


def cli_data(args) -> int:
    names = [get_dataset(args.name).name] if args.name else list(DATASETS)
    for name in names:
        ds = DATASETS[name]
        if args.action == "list":
            try:
                where = str(resolve_data_dir(name, args.data_dir, download=False))
            except FileNotFoundError:
                where = "not downloaded"
            print(f"{name:<16} task {ds.task:<14} {ds.summary}")
            print(f"{'':<16} source: {', '.join(s.url for s in ds.sources)}")
            print(f"{'':<16} local: {where}; licence: {ds.licence}")
        elif args.action == "fetch":
            if args.data_dir is not None or os.environ.get("TINYDISTILL_DATA"):
                folder = resolve_data_dir(name, args.data_dir, download=False)
                print(f"{name}: using local files in {folder} (nothing downloaded)")
            else:
                folder = cache_root() / name
                if _missing(folder, ds):
                    progress(f"{name}: downloading to {folder} ...")
                    fetch(ds, cache_root())
                print(f"{name}: ready in {folder}")
        else:
            print("\n".join(check_dataset(ds, args.data_dir, getattr(args, "split_seed", None))))
    return 0

"""Evaluation protocol, data side: hold-out test files in each task's format, exact-duplicate detection."""
from __future__ import annotations

import pytest

from tinydistill.tasks import build_task
from tinydistill.tasks.datasets import DATASETS, check_dataset
from tinydistill.tasks.overlap import between, seen_texts, unseen, within


def test_chnsenticorp_dev_overlaps_train(data_dir):
    task = build_task("chnsenticorp", data_dir=str(data_dir))
    train, dev = task.load("train"), task.load("dev")
    assert between(train, dev)["rows"] == 338 and between(train, dev)["of"] == 1200
    assert len(unseen(dev, seen_texts(train))) == 1200 - 338
    w = within(train)
    assert w["rows"] == 9600 and w["duplicate_rows"] == 9600 - w["distinct"] > 0
    lines = check_dataset(DATASETS["chnsenticorp"], str(data_dir))
    assert any("338 of 1,200 dev texts" in line and "verbatim in train" in line for line in lines)
    assert any("within train: 1,351 of 9,600 rows" in line for line in lines)


def test_chnsenticorp_test_file_in_dev_layout(tmp_path, data_dir):
    f = tmp_path / "held_out.tsv"
    f.write_text("qid\tlabel\ttext_a\n0\t1\t很好的酒店\n1\t0\t太差了\n", encoding="utf-8")
    task = build_task("chnsenticorp", data_dir=str(data_dir), test=str(f))
    test = task.load_test()
    assert [(ex.text, ex.labels["label"]) for ex in test] == [("很好的酒店", "1"), ("太差了", "0")]
    assert build_task("chnsenticorp", data_dir=str(data_dir)).load_test() == []
    with pytest.raises(FileNotFoundError, match="task.test"):
        build_task("chnsenticorp", data_dir=str(data_dir), test=str(tmp_path / "nope.tsv")).load_test()
    # a relative name is looked up in the data set folder too (dev.tsv is in the right layout)
    assert len(build_task("chnsenticorp", data_dir=str(data_dir), test="dev.tsv").load_test()) == 1200


def test_nlpcc_test_file_in_corpus_format(tmp_path, data_dir):
    corpus = (data_dir / "nlpcc2018_task4" / "corpus.train.txt").read_text(encoding="utf-8").split("\n\n")[:3]
    f = tmp_path / "corpus.test.txt"
    f.write_text("\n\n".join(corpus) + "\n", encoding="utf-8")
    task = build_task("nlpcc2018_slu", data_dir=str(data_dir), test=str(f))
    test = task.load_test()
    assert test and all("intent" in ex.labels and "slot" in ex.labels for ex in test)
    assert len(test) == sum(len([l for l in s.splitlines() if l.strip()]) for s in corpus)

"""Task adapters on the real data: ChnSentiCorp, generic TSV classification, NLPCC 2018 SLU."""
from __future__ import annotations

import logging
import random

import numpy as np
import pytest

from tinydistill.distill.schema import ConfigError
from tinydistill.tasks import TASKS, build_task
from tinydistill.tasks.base import IGNORE_INDEX, DataError, Example, Span
from tinydistill.tasks.nlpcc_slu import bio_tags, decode_spans, parse_markup
from tinydistill.tasks.tokenization import CharTokenizer, ErnieWordPieceTokenizer


@pytest.fixture(scope="module")
def ernie(ernie_vocab):
    return ErnieWordPieceTokenizer(ernie_vocab)


@pytest.fixture(scope="module")
def slu(data_dir):
    return build_task("nlpcc2018_slu", data_dir=str(data_dir), max_seq_length=64)


def one_hot(ids, n, length=None):
    ids = np.asarray(ids)
    out = np.zeros(ids.shape + (n,), dtype="float32")
    for idx in np.ndindex(ids.shape):
        if ids[idx] >= 0:
            out[idx + (int(ids[idx]),)] = 5.0
    return out


def test_registry_and_strict_options(data_dir):
    assert {"chnsenticorp", "nlpcc2018_slu", "tsv_classification"} <= set(TASKS.names())
    with pytest.raises(ConfigError, match=r"task\.dev_ration: unknown key; did you mean 'dev_ratio'"):
        build_task("nlpcc2018_slu", data_dir=str(data_dir), dev_ration=0.1)
    with pytest.raises(ConfigError, match="on_error"):
        build_task("chnsenticorp", on_error="ignore")


# -- ChnSentiCorp ---------------------------------------------------------------------------------
def test_chnsenticorp_real_splits(data_dir, ernie):
    task = build_task("chnsenticorp", data_dir=str(data_dir), max_seq_length=64)
    assert [h.to_dict() for h in task.heads()] == [{"name": "label", "kind": "sequence", "labels": ["0", "1"]}]
    train, dev = task.load("train"), task.load("dev")
    assert (len(train), len(dev)) == (9600, 1200)
    assert {ex.labels["label"] for ex in dev} == {"0", "1"}
    assert dev[0].meta["line"] == 2 and dev[0].text.startswith("這間酒店")
    enc = [task.encode(ex, ernie) for ex in dev[:8]]
    assert all(len(e.input_ids) <= 64 for e in enc) and enc[0].labels["label"] == int(dev[0].labels["label"])
    batch = task.collate(enc, pad_id=ernie.pad_token_id)
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["labels/label"].shape == (8,)
    gold = [e.labels["label"] for e in enc]
    assert task.compute_metrics({"label": one_hot(gold, 2)}, enc)["accuracy"] == 100.0
    wrong = [1 - g for g in gold[:2]] + gold[2:]
    assert task.compute_metrics({"label": one_hot(wrong, 2)}, enc)["accuracy"] == 75.0
    out = task.decode(dev[0], {"label": np.array([0.0, 2.0])}, enc[0])
    assert out["label"] == "1" and abs(out["confidence"] - 1 / (1 + np.exp(-2))) < 1e-6


def test_chnsenticorp_test_layout_and_load_file(tmp_path):
    folder = tmp_path / "chnsenticorp"
    folder.mkdir()
    (folder / "train.tsv").write_text("label\ttext_a\n1\t好\n0\t差\n", encoding="utf-8")
    (folder / "dev.tsv").write_text("qid\tlabel\ttext_a\n0\t1\t不错\n", encoding="utf-8")
    (folder / "test.tsv").write_text("qid\ttext_a\n0\t还行吧\n1\t一般\n", encoding="utf-8")
    task = build_task("chnsenticorp", data_dir=str(tmp_path))
    test = task.load("test")
    assert [ex.text for ex in test] == ["还行吧", "一般"] and all(not ex.labels for ex in test)
    assert [ex.labels["label"] for ex in task.load_file(str(folder / "dev.tsv"))] == ["1"]
    with pytest.raises(DataError, match=r"test\.tsv:1: missing column 'label'"):
        task.load_file(str(folder / "test.tsv"))


# -- generic TSV classification -----------------------------------------------------------------
def test_tsv_classification_from_options_only(tmp_path, ernie):
    (tmp_path / "train.txt").write_text("天气好,今天晴,同意\n天气差,今天雨,反对\n还行,也行,同意\n", encoding="utf-8")
    (tmp_path / "dev.txt").write_text("下雨,没雨,反对\n", encoding="utf-8")
    task = build_task("tsv_classification", data_dir=str(tmp_path), train="train.txt", dev="dev.txt",
                      header=False, delimiter=",", text_column=0, text_pair_column=1, label_column=2)
    assert task.heads()[0].labels == ("反对", "同意")  # derived, sorted
    dev = task.load("dev")
    assert (dev[0].text, dev[0].text_pair, dev[0].labels) == ("下雨", "没雨", {"label": "反对"})
    enc = task.encode(dev[0], ernie)
    assert enc.token_type_ids == [0, 0, 0, 0, 1, 1, 1] and enc.labels == {"label": 0}
    fixed = build_task("tsv_classification", train=str(tmp_path / "train.txt"), header=False, delimiter=",",
                       text_column=0, label_column=2, labels=["同意", "反对"])
    assert fixed.heads()[0].labels == ("同意", "反对") and fixed.load("train")[0].text_pair is None
    with pytest.raises(ConfigError, match="must be indices"):
        build_task("tsv_classification", train="x.tsv", header=False)


# -- broken input: file and line, skip mode -------------------------------------------------------
BROKEN_TSV = [
    ("label\ttext_a\n1\t好\n2\t坏\n", r"bad\.tsv:3: unknown label '2' \(expected one of: 0, 1\)"),
    ("label\ttext_a\n1\t好\n0\n", r"bad\.tsv:3: missing column: expected 2 columns \(label, text_a\)"),
    ("label\ttext_a\n1\t  \n", r"bad\.tsv:2: empty text"),
    ("text_a\n好\n", r"bad\.tsv:1: missing column 'label'"),
]


@pytest.mark.parametrize("content,message", BROKEN_TSV)
def test_classification_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    task = build_task("tsv_classification", train=str(path), labels=["0", "1"])
    with pytest.raises(DataError, match=message):
        task.load("train")


def test_undecodable_bytes_and_skip_mode(tmp_path, caplog):
    path = tmp_path / "bad.tsv"
    path.write_bytes("label\ttext_a\n1\t好\n".encode() + b"0\t\xff\xfe bad\n" + "0\t差\n9\t坏\n".encode())
    with pytest.raises(DataError, match=r"bad\.tsv:3: undecodable bytes"):
        build_task("tsv_classification", train=str(path), labels=["0", "1"]).load("train")
    task = build_task("tsv_classification", train=str(path), labels=["0", "1"], on_error="skip")
    with caplog.at_level(logging.WARNING, logger="tinydistill.tasks"):
        rows = task.load("train")
    assert [ex.text for ex in rows] == ["好", "差"]
    assert [(e.line, "undecodable" in str(e) or "unknown label" in str(e)) for e in task.skipped] == [(3, True), (5, True)]
    assert "skipped 2 bad row(s)" in caplog.text


SLU_ROWS = "1\t播放花心\tmusic.play\t播放<song>花心</song>\n"
BROKEN_SLU = [
    ("1\t播放花心\tmusic.play\t播放<song>花心\n", r"corpus\.train\.txt:2: unclosed tag <song>"),
    ("1\t播放花心\tmusic.play\t播放<song>花心</singer>\n", r":2: mismatched tags: <song> closed by </singer>"),
    ("1\t播放花心\tmusic.play\t<singer>播放<song>花心</song></singer>\n", r":2: tag <song> .* opened inside <singer>"),
    ("1\t播放花心\tmusic.play\t播放花心</song>\n", r":2: closing tag </song> .* without an opening tag"),
    ("1\t播放花心\tmusic.fly\t播放<song>花心</song>\n", r":2: unknown intent 'music.fly'"),
    ("1\t播放花心\tmusic.play\n", r":2: missing column: expected 4 tab-separated columns"),
    ("1\t\tOTHERS\t\n", r":2: empty text"),
    ("1\t播放花心\tmusic.play\t播放<tune>花心</tune>\n", r":2: unknown slot 'tune'"),
    ("1\t播放花心\tmusic.play\t播放<song>花</song>\n", r":2: the annotated utterance without its tags reads"),
    ("1\t播放花心\tmusic.play\t播放<song>||花心</song>\n", r":2: empty value in <song>"),
]


def slu_dir(tmp_path, data_dir, corpus: str, intents=None, slots=None):
    folder = tmp_path / "nlpcc2018_task4"
    folder.mkdir(exist_ok=True)
    src = data_dir / "nlpcc2018_task4"
    (folder / "corpus.train.txt").write_text(corpus, encoding="utf-8")
    for name, lines in (("intent_label.txt", intents), ("slot_label.txt", slots)):
        text = (src / name).read_text(encoding="utf-8") if lines is None else "".join(f"{x}\n" for x in lines)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize("row,message", BROKEN_SLU)
def test_slu_errors_name_file_and_line(tmp_path, data_dir, row, message):
    slu_dir(tmp_path, data_dir, SLU_ROWS + row)
    with pytest.raises(DataError, match=message):
        build_task("nlpcc2018_slu", data_dir=str(tmp_path)).load("train")


def test_slu_skip_mode_counts(tmp_path, data_dir):
    slu_dir(tmp_path, data_dir, SLU_ROWS + "".join(row for row, _ in BROKEN_SLU) + "\n2\t下一首\tmusic.next\t下一首\n")
    task = build_task("nlpcc2018_slu", data_dir=str(tmp_path), on_error="skip", dev_ratio=0.5)
    assert len(task.load("train")) + len(task.load("dev")) == 2
    assert [e.line for e in task.skipped] == list(range(2, 2 + len(BROKEN_SLU)))
    assert any("skipped bad rows: 10" in line for line in task.data_summary())


def test_cli_reports_data_errors_as_one_line(tmp_path, data_dir, capsys):
    from tinydistill.experiments.cli import main

    slu_dir(tmp_path, data_dir, SLU_ROWS + BROKEN_SLU[0][0])
    assert main(["data", "check", "nlpcc2018_slu", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "corpus.train.txt:2: unclosed tag <song>" in err and "\n" not in err


# -- NLPCC SLU: markup, split, labels, metrics, decoding ----------------------------------------
def test_parse_markup_uses_asr_form_and_keeps_corrections():
    text, spans, corr = parse_markup("播放<singer>英文文||于文文</singer>的<song>体验||体面</song>")
    assert text == "播放英文文的体验"
    assert spans == [Span("singer", 2, 5), Span("song", 6, 8)] and corr == ["于文文", "体面"]
    text, spans, corr = parse_markup("<style>b box</style>")
    assert (text, spans, corr) == ("b box", [Span("style", 0, 5)], [None])
    assert parse_markup("下一首") == ("下一首", [], [])


def test_slu_real_corpus_split(slu, data_dir):
    train, dev = slu.load("train"), slu.load("dev")
    assert len(train) + len(dev) == 21352
    sessions = lambda rows: {ex.meta["session"] for ex in rows}  # noqa: E731
    assert not sessions(train) & sessions(dev)
    assert len(sessions(train)) + len(sessions(dev)) == 4705
    assert abs(len(sessions(dev)) / 4705 - 0.2) < 0.001
    info = slu.split_info()
    assert info["dev_session_ids"] == sorted(sessions(dev)) and info["split_seed"] == 42
    again = build_task("nlpcc2018_slu", data_dir=str(data_dir))
    assert again.split_info()["dev_sessions_sha256"] == info["dev_sessions_sha256"]
    other = build_task("nlpcc2018_slu", data_dir=str(data_dir), split_seed=1)
    assert other.split_info()["dev_sessions_sha256"] != info["dev_sessions_sha256"]
    heads = {h.name: h for h in slu.heads()}
    assert (heads["intent"].kind, heads["intent"].num_labels) == ("sequence", 11)
    assert (heads["slot"].kind, heads["slot"].num_labels) == ("token", 32)
    assert slu.slotless_intents() == {"OTHERS", "music.pause", "music.prev", "music.next", "navigation.open",
                                      "navigation.start_navigation", "navigation.cancel_navigation",
                                      "phone_call.cancel"}


def test_labels_derived_from_data_match_label_files(slu, data_dir):
    derived = build_task("nlpcc2018_slu", data_dir=str(data_dir), label_files=False)
    for a, b in zip(slu.heads(), derived.heads()):
        assert set(a.labels) == set(b.labels) and len(b.labels) == len(a.labels)
    assert derived.heads()[1].labels[:4] == ("PAD", "O", "B-age", "I-age")


def test_results_do_not_depend_on_label_file_order(tmp_path, data_dir, slu, ernie):
    src = data_dir / "nlpcc2018_task4"
    intents = (src / "intent_label.txt").read_text(encoding="utf-8").split()
    slots = (src / "slot_label.txt").read_text(encoding="utf-8").split()
    random.Random(0).shuffle(intents)
    random.Random(1).shuffle(slots)
    corpus = (src / "corpus.train.txt").read_text(encoding="utf-8")
    slu_dir(tmp_path, data_dir, corpus, intents, slots)
    shuffled = build_task("nlpcc2018_slu", data_dir=str(tmp_path), max_seq_length=64)
    assert shuffled.slotless_intents() == slu.slotless_intents()
    rng = np.random.default_rng(0)
    dev = slu.load("dev")[:300]
    # the same predictions (as label names), expressed in each task's own ids
    pred_intents = [ex.labels["intent"] if rng.random() < 0.8 else "OTHERS" for ex in dev]
    metrics = []
    for task in (slu, shuffled):
        enc = [task.encode(ex, ernie) for ex in dev]
        names = task.slot_tags
        length = max(len(e.input_ids) for e in enc)
        tag_ids = np.full((len(enc), length), names.index("O"))
        for i, e in enumerate(enc):
            gold = [names[t] if t != IGNORE_INDEX else "O" for t in e.labels["slot"]]
            if i % 7 == 0 and len(gold) > 3:
                gold[2] = "B-song"  # a wrong slot on some rows
            tag_ids[i, : len(gold)] = [names.index(t) for t in gold]
        logits = {"intent": one_hot([task.intents.index(p) for p in pred_intents], 11),
                  "slot": one_hot(tag_ids, 32)}
        metrics.append(task.compute_metrics(logits, enc))
    assert metrics[0] == metrics[1]
    assert 0 < metrics[0]["sentence_accuracy"] < 100 and 0 < metrics[0]["slot_f1"] < 100


def test_slu_encode_decode_and_metrics(slu, ernie):
    ex = Example("来一首周华健的花心", labels={"intent": "music.play",
                                                "slot": [Span("singer", 3, 6), Span("song", 7, 9)]})
    enc = slu.encode(ex, ernie)
    tags = [None if t == IGNORE_INDEX else slu.slot_tags[t] for t in enc.labels["slot"]]
    assert tags == [None, "O", "O", "O", "B-singer", "I-singer", "I-singer", "O", "B-song", "I-song", None]
    logits = {"intent": one_hot(slu.intents.index("music.play"), 11),
              "slot": one_hot([slu.slot_tags.index(t or "O") for t in tags], 32)}
    out = slu.decode(Example(ex.text), logits, enc)
    assert out["intent"] == "music.play" and abs(out["confidence"] - np.exp(5) / (np.exp(5) + 10)) < 1e-9
    assert out["slots"] == [{"slot": "singer", "entity": "周华健", "pos": [3, 5]},
                            {"slot": "song", "entity": "花心", "pos": [7, 8]}]
    # an utterance of a slot-less intent with a spurious predicted slot: right for the ERNIE-example
    # sentence accuracy (slots of such intents are not scored), wrong for the strict one
    other = Example("今天天气怎么样", labels={"intent": "OTHERS", "slot": []})
    enc2 = slu.encode(other, ernie)
    spurious = [slu.slot_tags.index("O")] * len(enc2.input_ids)
    spurious[1] = slu.slot_tags.index("B-song")
    batch = [enc, enc2]
    slot_logits = np.zeros((2, 11, 32), dtype="float32")
    slot_logits[0] = logits["slot"]
    slot_logits[1, : len(spurious)] = one_hot(spurious, 32)
    m = slu.compute_metrics({"intent": one_hot([slu.intents.index("music.play"),
                                                slu.intents.index("OTHERS")], 11), "slot": slot_logits}, batch)
    assert m["sentence_accuracy"] == 100.0 and m["sentence_accuracy_strict"] == 50.0
    assert m["intent_accuracy"] == 100.0 and m["slot_recall"] == 100.0
    assert abs(m["slot_precision"] - 200 / 3) < 1e-9 and abs(m["slot_f1"] - 80.0) < 1e-9


def test_truncation_keeps_labels_aligned(slu, ernie):
    task = build_task("nlpcc2018_slu", data_dir=slu.options.data_dir, max_seq_length=7)
    ex = Example("来一首周华健的花心", labels={"intent": "music.play", "slot": [Span("singer", 3, 6)]})
    enc = task.encode(ex, ernie)
    assert len(enc.input_ids) == len(enc.labels["slot"]) == 7
    assert task.tags_to_spans(enc.labels["slot"], enc.offsets) == [Span("singer", 3, 5)]  # clipped


def test_seqeval_style_decoding():
    offsets = [(0, 0)] + [(i, i + 1) for i in range(6)] + [(0, 0)]
    tags = [None, "I-song", "I-song", "B-singer", "I-song", "O", "PAD", None]
    assert decode_spans(tags, offsets) == [Span("song", 0, 2), Span("singer", 2, 3), Span("song", 3, 4)]
    assert bio_tags([Span("song", 1, 3)], offsets) == [None, "O", "B-song", "I-song", "O", "O", "O", None]


def test_every_gold_span_round_trips_through_bio(slu, ernie):
    """Acceptance: decoding the gold BIO tags of EVERY utterance gives back its gold spans.

    With the character tokenizer that holds for all 21,352 utterances.  With ERNIE WordPiece it holds
    for every span whose edges are token edges; the corpus has exactly one span that starts or ends
    inside a word piece (``100`` in ``打电话100ml``, the piece is ``100ml``), which BIO over those
    tokens cannot express and which therefore decodes to the whole piece.
    """
    task = build_task("nlpcc2018_slu", data_dir=slu.options.data_dir, max_seq_length=512)
    corpus = task.corpus()
    assert len(corpus) == 21352
    char = CharTokenizer.build(task.texts("train"))
    for tok, name in ((char, "char"), (ernie, "ernie")):
        failures, inside_piece = [], []
        for ex in corpus:
            enc = task.encode(ex, tok)
            if task.tags_to_spans(enc.labels["slot"], enc.offsets) != ex.labels["slot"]:
                failures.append(ex.meta["line"])
            starts = {s for s, e in enc.offsets if e > s}
            ends = {e for s, e in enc.offsets if e > s}
            if any(sp.start not in starts or sp.end not in ends for sp in ex.labels["slot"]):
                inside_piece.append(ex.meta["line"])
        if name == "char":
            assert failures == [] and inside_piece == []
        else:
            assert failures == inside_piece
            assert [corpus_line(corpus, n).text for n in failures] == ["打电话100ml"]


def corpus_line(corpus, line):
    return next(ex for ex in corpus if ex.meta["line"] == line)


def test_slu_load_file_evaluates_any_file_in_corpus_format(slu, tmp_path, ernie):
    path = tmp_path / "corpus.test.txt"
    path.write_text("9\t导航到北京\tnavigation.navigation\t导航到<destination>北京</destination>\n\n"
                    "10\t下一首\tmusic.next\t下一首\n", encoding="utf-8")
    rows = slu.load_file(str(path))
    assert [(ex.text, ex.meta["line"], ex.meta["session"]) for ex in rows] == [("导航到北京", 1, "9"), ("下一首", 3, "10")]
    assert rows[0].labels["slot"] == [Span("destination", 3, 5)]
    enc = [slu.encode(ex, ernie) for ex in rows]
    logits = {"intent": one_hot([slu.intents.index(ex.labels["intent"]) for ex in rows], 11),
              "slot": np.stack([one_hot(np.pad(np.maximum(e.labels["slot"], 1), (0, 7 - len(e.labels["slot"])),
                                               constant_values=1), 32) for e in enc])}
    assert slu.compute_metrics(logits, enc)["sentence_accuracy"] == 100.0


def test_max_train_examples_is_a_fixed_seeded_subset(data_dir):
    full = build_task("chnsenticorp", data_dir=str(data_dir)).training_examples()
    cut = build_task("chnsenticorp", data_dir=str(data_dir), max_train_examples=500)
    picked = cut.training_examples()
    assert len(picked) == 500 and picked == cut.training_examples()  # same seed and size: same examples
    assert [full.index(e) for e in picked] == sorted(full.index(e) for e in picked)  # file order kept
    assert picked != full[:500]  # a random draw, not the head of the file
    other = build_task("chnsenticorp", data_dir=str(data_dir), max_train_examples=500, train_subset_seed=1)
    assert other.training_examples() != picked
    assert len(cut.load("dev")) == 1200  # dev is never cut
    with pytest.raises(ConfigError, match="max_train_examples"):
        build_task("chnsenticorp", data_dir=str(data_dir), max_train_examples=0)

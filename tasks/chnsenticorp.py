"""ChnSentiCorp sentiment in PaddleNLP's TSV layout.

``train.tsv``: header ``label<TAB>text_a``; ``dev.tsv``: ``qid<TAB>label<TAB>text_a``; ``test.tsv``:
``qid<TAB>text_a`` (unlabelled).  One sequence head ``label`` with labels ``("0", "1")``
(0 negative, 1 positive).
"""
from __future__ import annotations

from pathlib import Path

from tinydistill.tasks import TASKS
from tinydistill.tasks.base import TaskOptions
from tinydistill.tasks.datasets import resolve_data_dir
from tinydistill.tasks.tsv_classification import ClassificationTask, Layout


@TASKS.register("chnsenticorp", summary="ChnSentiCorp binary sentiment (PaddleNLP TSV layout)")
class ChnSentiCorpTask(ClassificationTask):
    """ChnSentiCorp: text -> label "0" (negative) / "1" (positive)."""

    name = "chnsenticorp"
    dataset = "chnsenticorp"
    Options = TaskOptions

    def split_path(self, split: str) -> Path:
        return resolve_data_dir(self.dataset, self.options.data_dir) / f"{split}.tsv"

    def layout(self, split: str | None) -> Layout:
        # columns are read by header name, so every split's layout (and any file with a header that
        # names text_a and label) is read the same way
        return Layout(text="text_a", label="label", header=True)

    def fixed_labels(self) -> tuple[str, ...]:
        return ("0", "1")

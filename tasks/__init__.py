"""Task adapters: data, labels, encoding, heads, metrics and decoding; nothing about models.

``TASKS`` maps a task name to its adapter class (a subclass of ``tasks.base.Task``).
"""
from distill.registry import Registry

TASKS = Registry("task", modules=("tasks.chnsenticorp", "tasks.nlpcc_slu", "tasks.tsv_classification", "tasks.multitask"))


def build_task(name: str, **options):
    """Instantiate the task adapter registered as ``name`` with its options (``task:`` config section)."""
    return TASKS.get(name)(**options)

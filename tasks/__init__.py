"""Task adapters: data, labels, encoding, heads, metrics and decoding; nothing about models.

``TASKS`` maps a task name to its adapter class (a subclass of ``tasks.base.Task``).
"""
from tinydistill.distill.registry import Registry

TASKS = Registry("task", modules=("tinydistill.tasks.chnsenticorp", "tinydistill.tasks.nlpcc_slu", "tinydistill.tasks.tsv_classification", "tinydistill.tasks.multitask"))


def build_task(name: str, **options):
    """Instantiate the task adapter registered as ``name`` with its options (``task:`` config section)."""
    return TASKS.get(name)(**options)

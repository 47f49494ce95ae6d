"""``share_student: true``: runs that train the same student the same way share one training.

Runs of a sweep often differ only after the student stage (compression steps, exports: every candidate of a
``tinydistill search`` with the same student).  With ``share_student: true`` the student stage is keyed like a
teacher, by what determines the trained student: the task (evaluation-only options aside), the keys of the
teachers and assistants it learns from, the ``student`` section, the ``distill`` section and the seed.  It is
trained once under ``<out>/<name>/_students/<key>/`` (under a store lock: other runs and workers wait instead of
training it again; ``--resume`` continues its checkpoint) and linked into each run as ``student ->
../_students/<key>``; each run still evaluates it on its own evaluation sets and records it as its student.
"""
from __future__ import annotations

import time
from pathlib import Path

from tinydistill.distill.fsutil import clean_stale_temporaries, read_json, write_json

STUDENTS_DIR = "_students"


def shared_dir(runner) -> Path:
    from tinydistill.experiments.identity import config_hash, hash_view, short_name
    from tinydistill.experiments.protocol import teacher_task

    r = runner
    body = {"task": teacher_task(hash_view(r.raw, r.data_fingerprint)["task"]), "teacher_keys": r.teacher_keys(),
            "student": r.raw["student"], "distill": r.raw["distill"], "seed": r.seed}
    return r.exp_dir / STUDENTS_DIR / f"{short_name(r.cfg.student.name)}-s{r.seed}-{config_hash(body, drop=())[:10]}"


def shared_student(runner) -> tuple[Path, dict, dict]:
    """Train the shared student if it is missing and link it into the run: ``(run_dir/student, dev metrics,
    training facts)``."""
    from tinydistill.experiments.protocol import training_facts

    r = runner
    shared = shared_dir(r)
    done = shared / ".done.json"
    with r.store.lock(f"student-{shared.name}", log=r._log_prefixed):
        if not done.is_file():
            t0 = time.time()
            r.log(f"{r.prefix}student {r.cfg.student.name} (seed {r.seed}): training, shared -> {shared}")
            clean_stale_temporaries(shared)
            result = r._train_student(shared)
            write_json(done, {"seconds": round(time.time() - t0, 3), "dev": dict(result.best_metrics),
                              "facts": training_facts(result, r.cfg.distill)})
    from tinydistill.distill.fsutil import link_atomically

    link = r.run_dir / "student"
    link_atomically(link, shared)
    record = read_json(done)
    return link, record["dev"], record["facts"]

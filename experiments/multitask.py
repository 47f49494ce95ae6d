"""Multi-task teachers: a teacher fine-tuned jointly on several tasks, one shared encoder, one set of heads per task.

```yaml
task: {name: nlpcc2018_slu, max_seq_length: 16}          # the student's task (must be one of teacher.tasks)
teacher:
  name: ernie-3.0-tiny-micro-v2-zh
  tasks: [nlpcc2018_slu, chnsenticorp, {name: tsv_classification, train: ..., dev: ...}]
  task_mixing: {mode: temperature, temperature: 2.0}     # or proportional (default)
  train: {epochs: 3}
```

The teacher is trained with ``tasks.multitask.MultiTask`` (heads ``<task>__<head>``, batches mixing the tasks)
on every task's training split, chosen on the mean of the tasks' main dev metrics.  The entry of the experiment's
own task takes the ``task`` section's options (an entry's own options win); every other task inherits
``max_seq_length`` and ``data_dir`` from it unless it sets them.  The teacher directory holds the joint model
(``best/``: every task's heads in its manifest) and one ordinary model directory per task (``tasks/<task>/``:
the shared encoder with that task's heads under their own names), which the student of that task distils from
and every tool reads as any model directory.  ``tinydistill evaluate <teacher>/best --task NAME`` evaluates the
joint model on one task; without ``--task`` on all of them (metrics ``<task>.<metric>`` and ``mean_main``).
The teacher is shared like any teacher; its key holds every task's section and data fingerprint.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tinydistill.distill.schema import ConfigError

VIEWS_DIR = "tasks"
EVAL_ONLY = ("test", "dedup_eval")


# ----------------------------------------------------------------------------------------------
# config


def check_teacher_tasks(section, path: str) -> None:
    """Validate ``tasks`` / ``task_mixing`` of a teacher section in place (names made canonical)."""
    from tinydistill.experiments.config import _checked_name, task_options_class
    from tinydistill.distill.schema import from_dict

    if not section.tasks:
        if section.task_mixing:
            raise ConfigError(f"{path}.task_mixing: only a multi-task teacher ('tasks') mixes tasks")
        return
    if not section.finetune:
        raise ConfigError(f"{path}.tasks: a multi-task teacher is fine-tuned here (finetune: false is not supported)")
    out, seen = [], set()
    for i, item in enumerate(section.tasks):
        where = f"{path}.tasks[{i}]"
        item = {"name": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"{where}: expected a task name or a mapping with 'name', got {item!r}")
        item = dict(item)
        item["name"] = _checked_name(item["name"], f"{where}.name", "tasks")
        if item["name"] == "multitask" or item["name"] in seen:
            raise ConfigError(f"{where}.name: {item['name']!r} is listed twice or is not a single task")
        seen.add(item["name"])
        from_dict(task_options_class(item["name"]), {k: v for k, v in item.items() if k != "name"}, where)
        out.append(item)
    section.tasks = out
    mixing = dict(section.task_mixing or {})
    unknown = set(mixing) - {"mode", "temperature"}
    if unknown:
        raise ConfigError(f"{path}.task_mixing.{sorted(unknown)[0]}: unknown key (valid keys: mode, temperature)")
    if mixing.get("mode", "proportional") not in ("proportional", "temperature"):
        raise ConfigError(f"{path}.task_mixing.mode: expected proportional or temperature, got {mixing['mode']!r}")
    t = mixing.get("temperature", 2.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t <= 0:
        raise ConfigError(f"{path}.task_mixing.temperature: expected a number > 0, got {t!r}")


def check_task_listed(task_name: str, teachers: list) -> None:
    for i, t in enumerate(teachers):
        if t.tasks and task_name not in [e["name"] for e in t.tasks]:
            raise ConfigError(f"{'teacher' if i == 0 else f'teachers[{i}]'}.tasks: the experiment's task {task_name!r} "
                              f"is not one of the teacher's tasks {[e['name'] for e in t.tasks]}")


# ----------------------------------------------------------------------------------------------
# runner side


def subtask_specs(runner, teacher) -> list[dict]:
    """The sub-task sections as the teacher is trained on them (see the module docstring)."""
    main = runner.raw["task"]
    out = []
    for entry in teacher.tasks:
        if entry["name"] == main["name"]:
            spec = {**{k: v for k, v in main.items() if k not in EVAL_ONLY}, **entry}
        else:
            spec = {"max_seq_length": main.get("max_seq_length", 128), "data_dir": main.get("data_dir"), **entry}
        out.append(spec)
    return out


def multitask_for(runner, teacher):
    from tinydistill.tasks.multitask import MultiTask

    mixing = teacher.task_mixing or {}
    main = runner.cfg.task.options
    return MultiTask(tasks=subtask_specs(runner, teacher), mixing=mixing.get("mode", "proportional"),
                     temperature=float(mixing.get("temperature", 2.0)), seed=runner.seed,
                     max_seq_length=main.max_seq_length, data_dir=main.data_dir)


def teacher_key_extra(runner, teacher) -> dict:
    """What a multi-task teacher's key adds: every task's section (no machine paths) and data by content."""
    from tinydistill.experiments.config import TaskSection, task_options_class
    from tinydistill.experiments.identity import data_fingerprint
    from tinydistill.distill.schema import from_dict

    specs, data = [], {}
    for spec in subtask_specs(runner, teacher):
        options = from_dict(task_options_class(spec["name"]), {k: v for k, v in spec.items() if k != "name"}, "task")
        data[spec["name"]] = data_fingerprint(TaskSection(spec["name"], options))
        specs.append({k: v for k, v in spec.items() if k != "data_dir"})
    return {"tasks": specs, "tasks_data": data}


def teacher_model_dir(shared: Path, teacher, task_name: str) -> Path:
    """The model directory a run's student learns from: the task's view of a multi-task teacher, else best/."""
    return shared / VIEWS_DIR / task_name if teacher.tasks else shared / "best"


def train_teacher(runner, i: int, out: Path) -> dict:
    """Fine-tune teacher ``i`` jointly on its tasks into ``out``; write the per-task views; its metrics."""
    from tinydistill.distill.runtime import seed_everything
    from tinydistill.distill.trainer import evaluate, train
    from tinydistill.experiments.protocol import training_facts
    from tinydistill.experiments.stage_tools import resumable
    from tinydistill.experiments.tokenizers import make_tokenizer
    from tinydistill.teachers.base import build_model, load_model_dir

    t = runner.cfg.all_teachers[i]
    mt = multitask_for(runner, t)
    path = "teacher" if (i == 0 and runner.cfg.teacher) else f"teachers[{i}]"
    tok = make_tokenizer(t, path, lambda: mt.texts("train"))
    seed_everything(runner.seed)
    model = build_model("teacher", t.name, mt.heads(), init=t.init, vocab_size=tok.vocab_size, **t.options)
    result = resumable(out, "teacher", lambda: train(
        model, tok, mt, mt.load("train"), mt.load("dev"), t.train, str(out), teachers=(),
        resume=(out / "checkpoint").exists()))
    write_views(out / "best", mt, out / VIEWS_DIR)
    view, view_tok, _ = load_model_dir(out / VIEWS_DIR / runner.task.name)
    per_task = {name: {"dev": {k.split(".", 1)[1]: v for k, v in result.best_metrics.items() if k.startswith(f"{name}.")}}
                for name in mt.tasks}
    return {"dev": evaluate(view, view_tok, runner.task, runner.dev_examples), "tasks": per_task,
            "dev_mean_main": float(result.best_metrics.get("mean_main", 0.0)), **training_facts(result, t.train)}


def view_model(model, manifest: dict, task_name: str, task):
    """The shared encoder of a multi-task ``model`` with ``task``'s heads under their own names."""
    from tinydistill.tasks.multitask import SEP
    from tinydistill.teachers.base import _build_from_manifest

    single = _build_from_manifest(dict(manifest, heads=[h.to_dict() for h in task.heads()]), Path("."))
    mine = f"classifiers.{task_name}{SEP}"
    state = {k.replace(mine, "classifiers."): v for k, v in model.state_dict().items()
             if "classifiers." not in k or mine in k}
    expected = set(single.state_dict())
    if set(state) != expected:
        raise ConfigError(f"multi-task model: cannot take the {task_name} heads out (missing "
                          f"{sorted(expected - set(state))[:3]}, unexpected {sorted(set(state) - expected)[:3]})")
    single.set_state_dict(state)
    single.eval()
    return single


def write_views(best: Path, mt, root: Path) -> dict[str, Path]:
    """One model directory per task under ``root`` from the joint model directory ``best``."""
    from tinydistill.teachers.base import load_model_dir, save_model_dir

    model, tok, manifest = load_model_dir(best)
    return {name: save_model_dir(root / name, view_model(model, manifest, name, task), tok, task=task,
                                 extra={"multitask_teacher": str(best), "tasks": list(mt.tasks)})
            for name, task in mt.tasks.items()}


def evaluate_args(args):
    """``tinydistill evaluate MULTI_DIR --task NAME``: evaluate that task's view of a multi-task model directory
    (written to a temporary directory that is removed at exit)."""
    import atexit
    import shutil
    import tempfile

    from tinydistill.compress.common import read_manifest

    task = (read_manifest(args.model_dir).get("task") or {}) if getattr(args, "model_dir", None) else {}
    if task.get("name") != "multitask" or not getattr(args, "task", None) or args.task == "multitask":
        return args
    from tinydistill.tasks import build_task

    options = dict(task.get("options") or {})
    if args.data_dir is not None:
        options["data_dir"] = str(args.data_dir)
    mt = build_task("multitask", **options)
    if args.task not in mt.tasks:
        raise ConfigError(f"--task {args.task}: {args.model_dir} was trained on {list(mt.tasks)}")
    tmp = Path(tempfile.mkdtemp(prefix="tinydistill-view-"))
    atexit.register(shutil.rmtree, tmp, True)
    from tinydistill.teachers.base import load_model_dir, save_model_dir

    model, tok, manifest = load_model_dir(args.model_dir)
    save_model_dir(tmp / args.task, view_model(model, manifest, args.task, mt.tasks[args.task]), tok,
                   task=mt.tasks[args.task])
    out = copy.copy(args)
    out.model_dir, out.task = str(tmp / args.task), None
    return out


# ----------------------------------------------------------------------------------------------
# report side


def teacher_tasks_of(record: dict) -> list[str]:
    return [e.get("name", "?") for e in ((record.get("config") or {}).get("teacher") or {}).get("tasks") or []]


def multitask_table(rows: list) -> tuple[list[str], list[list[str]], list[list[Any]]] | None:
    """Each KD row whose teacher is multi-task, next to the matching single-task row (same task, teacher name and
    student, KD, a teacher trained on the task alone): the teachers' dev metric on the task, each task's dev metric
    of the multi-task teacher, and multi - single for the teacher and the student, paired by seed (t-test).
    None without any multi-task teacher."""
    from tinydistill.experiments.report import mean_std, paired_diff
    from tinydistill.experiments.report_protocol import _fmt_diff

    multi = [r for r in rows if r.kd and teacher_tasks_of(r.records[0])]
    if not multi:
        return None
    metric = multi[0].main_metric
    header = ["task", "recipe", "seeds", "teacher tasks", "teacher dev per task (%)", f"student {metric} (%)",
              "single-task recipe", "teacher multi - single (pp)", "student multi - single (pp)"]
    cells, raw = [], [["task", "recipe", "seeds", "teacher_tasks", "student_mean", "student_std", "single_recipe",
                       "teacher_diff_mean", "student_diff_mean", "student_diff_std", "student_diff_p", "n"]]
    for row in multi:
        m = row.main_metric
        tasks = teacher_tasks_of(row.records[0])
        per_task = []
        for t in tasks:
            mean, _ = mean_std(list(row.per_seed(f"teacher.tasks.{t}.dev.{_main_of(t)}").values()))
            per_task.append(f"{t} {'-' if mean is None else f'{mean:.2f}'}")
        single = next((s for s in rows if s.kd and s is not row and s.task == row.task and s.student == row.student
                       and s.teacher == row.teacher and not teacher_tasks_of(s.records[0])), None)
        student = mean_std(list(row.per_seed(f"student.dev.{m}").values()))
        t_diff = s_diff = None
        if single is not None:
            t_diff = paired_diff(row.per_seed(f"teacher.dev.{m}"), single.per_seed(f"teacher.dev.{m}"), test=False)
            s_diff = paired_diff(row.per_seed(f"student.dev.{m}"), single.per_seed(f"student.dev.{m}"),
                                 baseline=single.recipe)
        cells.append([row.task, row.recipe, str(len(row.records)), " + ".join(tasks), ", ".join(per_task),
                      "-" if student[0] is None else f"{student[0]:.2f}" + (f" ± {student[1]:.2f}" if student[1] else ""),
                      single.recipe if single else "none", _fmt_diff(t_diff) if t_diff else "-",
                      (_fmt_diff(s_diff) + (f" (p={s_diff.p_value:.3f})" if s_diff.p_value is not None else ""))
                      if s_diff else "-"])
        raw.append([row.task, row.recipe, len(row.records), "+".join(tasks), student[0], student[1],
                    single.recipe if single else None, t_diff.mean if t_diff else None,
                    s_diff.mean if s_diff else None, s_diff.std if s_diff else None,
                    s_diff.p_value if s_diff else None, s_diff.n if s_diff else None])
    return header, cells, raw


def _main_of(task_name: str) -> str:
    from tinydistill.tasks import TASKS

    return TASKS.get(task_name).main_metric

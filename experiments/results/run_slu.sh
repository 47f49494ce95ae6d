#!/usr/bin/env bash
# The NLPCC 2018 SLU results (experiments/results/slu_compression.{md,json}) and the teacher-assistant ablation
# (experiments/results/slu_assistants.md) from scratch, resumable: every finished run is skipped on a rerun.
# From the repository root, with the data in ../shared/data:
#
#   bash experiments/results/run_slu.sh [DATA_DIR]
#
# 1. the teacher's members (results_slu_teachers.yaml: micro s11, s12 and s13 on the whole training split);
# 2. the nano students, seeds 1-3 (results_slu.yaml): no KD, logits KD, logits KD + the compression chain with
#    equal-budget controls, logits + hidden-state KD;
# 3. the assistant-chain ablation (slu_assistants.yaml);
# 4. the tables (make_slu_table.py, tinydistill report).
# Two runs at a time, one thread each: on 2 cores that keeps both busy with the least threading overhead.
set -euo pipefail
data=${1:-../shared/data}
td() { python -m tinydistill.experiments.cli "$@"; }
td sweep experiments/configs/results_slu_teachers.yaml --data-dir "$data" --out runs --jobs 2 --cells 0-2 \
    --set distill.threads=1
# seeds 1-3: no KD and logits KD (cells 0-5: the KD gain), then logits KD with the compression chain and its
# controls (6-8), then logits + hidden-state KD (9-11)
for cells in 0-5 6-8 9-11; do
    td sweep experiments/configs/results_slu.yaml --data-dir "$data" --out runs --jobs 2 --set distill.threads=1 \
        --cells "$cells"
done
td sweep experiments/configs/slu_assistants.yaml --data-dir "$data" --out runs --jobs 2 --set distill.threads=1
python experiments/results/make_slu_table.py runs/results-slu --teachers-run runs/results-slu-teachers --rounds 5
td report runs/slu-assistants --plots --out experiments/results/slu_assistants

#!/usr/bin/env bash
# The ChnSentiCorp KD results (experiments/results/chnsenticorp_ablation.{md,json}) from scratch, resumable:
# every finished run is skipped on a rerun.  From the repository root, with the data in ../shared/data:
#
#   bash experiments/results/run_chnsenticorp.sh [DATA_DIR]
#
# 1. the teacher's members: eight independently trained models (results_chnsenticorp_ensemble.yaml);
# 2. the Bi-LSTM student, no KD / logits KD / logits KD + augmentation, 5 seeds each, distilled from the
#    members' equal-weight logit average (results_chnsenticorp_kd.yaml);
# 3. the table, t-tests and plots (make_chnsenticorp_table.py).
# Two runs at a time, one thread each: on 2 cores that keeps both busy with the least threading overhead.
set -euo pipefail
data=${1:-../shared/data}
tinydistill sweep experiments/configs/results_chnsenticorp_ensemble.yaml --data-dir "$data" --out runs --jobs 2 \
    --set distill.threads=1
# no KD and KD + augmentation first (3 seeds each are required; 5 are configured), then logits KD
for cells in 0-4,10-14 5-9; do
  tinydistill sweep experiments/configs/results_chnsenticorp_kd.yaml --data-dir "$data" --out runs --jobs 2 \
      --cells "$cells" --set distill.threads=1
done
python experiments/results/make_chnsenticorp_table.py runs/results-chnsenticorp-kd \
    --ensemble-run runs/results-chnsenticorp-ensemble \
    --earlier-run experiments/results/chnsenticorp_ablation/records/kd-3-members

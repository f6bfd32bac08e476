#!/usr/bin/env bash
# The NW-UCLA cross-view study reported in the README (issues 5 and 6), after
#   python experiments/prepare_data.py --format ucla --input ../shared/data/nw_ucla/all_sqe --output prepared/ucla
#   python experiments/pretrain.py --config configs/ucla_tiny_pretrain.json
# Every run writes runs/ucla_eval/<name>/results.json; report.py gathers them.
set -euo pipefail
cd "$(dirname "$0")/../.."
E=runs/ucla_eval
P=configs/ucla/probe.json
S=configs/ucla/semisup.json
lin() { python experiments/linear_eval.py --config $P "$@"; }
# (a) pretrained encoder, frozen; (b) the same preset randomly initialised, frozen; (c) raw coordinates
lin --checkpoint runs/ucla_tiny --feature pooled    --label "MacDiff tiny, pretrained (pooled)"    --output $E/a_pretrained_pooled
lin --checkpoint runs/ucla_tiny --feature per_joint --label "MacDiff tiny, pretrained (per-joint)" --output $E/a_pretrained_perjoint
lin --random-init --preset tiny --feature pooled    --label "tiny, random init (pooled)"    --output $E/b_random_pooled
lin --random-init --preset tiny --feature per_joint --label "tiny, random init (per-joint)" --output $E/b_random_perjoint
lin --feature raw --label "raw normalised coordinates" --output $E/c_raw
# (d) the same encoder trained supervised from scratch; (e) fine-tuned from the pretrained checkpoint
python experiments/finetune.py --config $S --checkpoint "" --random-init --preset tiny --seeds 0 --batch-size 64 \
    --label "tiny, supervised from scratch" --output $E/d_scratch
python experiments/finetune.py --config $S --seeds 0 --batch-size 64 --label "MacDiff tiny, fine-tuned" --output $E/e_finetuned
python experiments/report.py --runs $E --out $E/table.md
# Semi-supervised, with and without diffusion augmentation (t_s = 500; lambda as METHOD.md: 0.25 at 10%)
for frac in 0.1 0.05; do
  ratio=$([ "$frac" = "0.1" ] && echo 0.25 || echo 0.5)
  python experiments/finetune.py --config $S --labeled-fraction $frac --label "semi $frac, no aug" --output $E/semi_${frac}_noaug
  python experiments/finetune.py --config $S --labeled-fraction $frac --augment --t-start 500 --aug-ratio $ratio \
      --augment-actors 1 --label "semi $frac, aug t500 L$ratio" --output $E/semi_${frac}_aug
done
python experiments/report.py --runs $E --out $E/table.md
# The tau sweep (issue 7): tau in {-1, 0, 1}, tiny preset, kNN proxy
python experiments/sweep.py --space configs/sweeps/tau.yaml --data prepared/ucla --output runs/sweep_tau
# Generative tasks (issue 8): reconstruction of occluded motion and unconditional generation on the test split;
# features for FID/KID/precision/recall from the fine-tuned classifier (e_finetuned)
python experiments/generate.py reconstruct --checkpoint runs/ucla_tiny --data prepared/ucla --benchmark ucla-xview \
    --split test --num-samples 128 --steps 25 --workers 2 --output runs/gen_rec_ucla
python experiments/generate.py sample --checkpoint runs/ucla_tiny --classifier $E/e_finetuned/seed_0 --data prepared/ucla \
    --benchmark ucla-xview --num-samples 464 --steps 25 --workers 2 --output runs/gen_sample_ucla

#!/usr/bin/env bash
# The learning studies reported in the README (issue 14). Each study is one resumable command; re-run to resume.
#   python experiments/prepare_data.py --format ucla --input ../shared/data/nw_ucla/all_sqe --output prepared/ucla
#   python experiments/prepare_data.py --format msr  --input ../shared/data/msr_action3d/skeletons --output prepared/msr
#   python experiments/prepare_data.py --format utk  --input ../shared/data/utkinect_action3d --output prepared/utk
set -euo pipefail
cd "$(dirname "$0")/../.."
# NW-UCLA: 32 frames (median sequence 30), tiny preset, 57-minute pretraining budget (configs/ucla_tiny32_pretrain.json)
python experiments/pretrain.py --config configs/ucla_tiny32_pretrain.json
python experiments/study.py --data prepared/ucla --benchmark ucla-xview --pretrained runs/ucla_tiny32 --num-frames 32 \
    --seeds 0 1 2 --finetune-epochs 50 --output runs/study_ucla
# NW-UCLA, fifth session: the same budget pretrained inside the study (one core), then fine-tune and from-scratch
# rows over three seeds on that checkpoint (curve_points 0: the learning curve is probed once, by the first study)
python experiments/study.py --data prepared/ucla --benchmark ucla-xview --budget-minutes 57 --num-frames 32 \
    --seeds 0 1 2 --rows probe probe_pooled probe_random probe_raw knn nn_raw --output runs/study_ucla60
mkdir -p runs/cfg && echo '{"curve_points": 0}' > runs/cfg/nocurve.json
for r in finetune:ft scratch:scratch; do  # row:output suffix (each ran on its own core, side by side)
    python experiments/study.py --data prepared/ucla --benchmark ucla-xview --pretrained runs/study_ucla60/pretrain \
        --num-frames 32 --seeds 0 1 2 --finetune-epochs 50 --rows "${r%%:*}" --config runs/cfg/nocurve.json \
        --output "runs/study_ucla60_${r##*:}"
done
# MSR Action3D and UTKinect, sixth session: 45-minute budgets, side by side, each pinned to one core
# (taskset -c 1 / -c 0, OMP_NUM_THREADS=1); frame count from the data's lengths, batch from the fitted-batch rule
for d in msr:msr-xsub utk:utk-xsub; do
    python experiments/study.py --data "prepared/${d%%:*}" --benchmark "${d##*:}" --budget-minutes 45 \
        --seeds 0 1 2 3 4 --rows probe probe_pooled probe_random probe_raw knn nn_raw --output "runs/study_${d%%:*}45"
done
# MSR Action3D and UTKinect, third session: the probe rows, pretraining inside the study
python experiments/study.py --data prepared/msr --benchmark msr-xsub --budget-minutes 20 --seeds 0 1 2 3 4 \
    --rows probe probe_pooled probe_random probe_raw knn nn_raw --output runs/study_msr
python experiments/study.py --data prepared/utk --benchmark utk-xsub --budget-minutes 15 --seeds 0 1 2 3 4 \
    --rows probe probe_pooled probe_random probe_raw knn nn_raw --output runs/study_utk
# Bring your own data: UTKinect in camera coordinates, exported to arrays and imported with the default options
python experiments/prepare_data.py --format utk --input ../shared/data/utkinect_action3d --output prepared/utk_cam \
    --option center=false
python -m macdiff_ray.data.export prepared/utk_cam utk-xsub runs/byod/utk_cam/utk_cam.npz
python experiments/prepare_data.py --format arrays --input runs/byod/utk_cam --output prepared/utk_byod
echo '{"pretrain_batch_size": 16, "batch_size": 16}' > runs/byod/batch16.json
python experiments/study.py --data prepared/utk_byod --benchmark custom --budget-minutes 15 --seeds 0 1 2 3 4 \
    --rows probe probe_random probe_raw knn nn_raw --config runs/byod/batch16.json --output runs/study_utk_byod
# Bring your own data, sixth session: the same import, default options throughout (fitted batch 8), 45 minutes
python experiments/study.py --data prepared/utk_byod --benchmark custom --budget-minutes 45 --seeds 0 1 2 3 4 \
    --rows probe probe_random probe_raw knn nn_raw --output runs/study_utk_byod45
# Seventh session: the same, at the issue's full budget of 60 minutes
python experiments/study.py --data prepared/utk_byod --benchmark custom --budget-minutes 60 --seeds 0 1 2 3 4 \
    --rows probe probe_random probe_raw knn nn_raw --output runs/study_utk_byod60
# Eighth session: a 35-minute pretraining on both cores (bf16 default), then, each pinned to one core at the same
# time, the semi-supervised rows with the diffusion augmentation at three t_s (the paper's Table 9 ablation) and
# the fine-tune at the paper's 100 epochs
python experiments/pretrain.py --config configs/ucla_tiny32_pretrain.json --budget-minutes 35 --output runs/ucla_tiny32_35
mkdir -p runs/cfg && echo '{"curve_points": 0}' > runs/cfg/nocurve.json
python experiments/study.py --data prepared/ucla --benchmark ucla-xview --pretrained runs/ucla_tiny32_35 \
    --num-frames 32 --seeds 0 1 2 3 4 --finetune-epochs 50 --rows semi --aug-t-start 100 300 500 \
    --config runs/cfg/nocurve.json --output runs/study_ucla35_semi
python experiments/study.py --data prepared/ucla --benchmark ucla-xview --pretrained runs/ucla_tiny32_35 \
    --num-frames 32 --seeds 0 1 2 --finetune-epochs 100 --rows finetune --config runs/cfg/nocurve.json \
    --output runs/study_ucla35_ft100
# Ninth session: the same semi-supervised study resumed with t_s 1 added (a near-copy control: the rows done
# before are kept), and the probe rows on the 35-minute checkpoint
python experiments/study.py --data prepared/ucla --benchmark ucla-xview --pretrained runs/ucla_tiny32_35 \
    --num-frames 32 --seeds 0 1 2 3 4 --finetune-epochs 50 --rows semi --aug-t-start 1 100 300 500 \
    --config runs/cfg/nocurve.json --output runs/study_ucla35_semi
python experiments/study.py --data prepared/ucla --benchmark ucla-xview --pretrained runs/ucla_tiny32_35 \
    --num-frames 32 --seeds 0 1 2 --rows probe probe_pooled probe_random probe_raw knn nn_raw --probe-cache-views 4 \
    --config runs/cfg/nocurve.json --output runs/study_ucla35_probe
# ... the probe protocol: 16 / 32 cached views and streaming, and the random-init probe on 16 views
for v in 16 32 0; do for s in 0 1 2; do
  python experiments/linear_eval.py --data prepared/ucla --benchmark ucla-xview --checkpoint runs/ucla_tiny32_35 \
      --feature per_joint --epochs 100 --batch-size 64 --lr 0.1 --num-frames 32 --num-workers 0 --materialize \
      --seed $s --cache-views $v --output runs/probe35/views${v}_seed$s
done; done
for s in 0 1 2; do
  python experiments/linear_eval.py --data prepared/ucla --benchmark ucla-xview --random-init --preset tiny \
      --feature per_joint --epochs 100 --batch-size 64 --lr 0.1 --num-frames 32 --num-workers 0 --materialize \
      --seed $s --cache-views 16 --output runs/probe35/random_views16_seed$s
done
# ... the one-step augmentation's change to a sequence, per t_s and condition
python benchmarks/augment_quality.py --checkpoint runs/ucla_tiny32_35 --data prepared/ucla --benchmark ucla-xview
# ... Table 5 on this checkpoint: the paper's 100 epochs of decoder fine-tuning, then both decoders reconstruct
python experiments/finetune_decoder.py --checkpoint runs/ucla_tiny32_35 --data prepared/ucla --epochs 100 \
    --output runs/ucla_tiny32_35_decft
python experiments/generate.py reconstruct --data prepared/ucla --benchmark ucla-xview \
    --checkpoint runs/ucla_tiny32_35_decft --frames 3,5,11 --num-samples 128 --steps 50 --workers 0 --render 2 \
    --output runs/recon35_decft
python experiments/generate.py reconstruct --data prepared/ucla --benchmark ucla-xview \
    --checkpoint runs/ucla_tiny32_35 --frames 3,5,11 --num-samples 128 --steps 50 --workers 0 --render 2 \
    --output runs/recon35_pre
# ... from scratch at the fine-tune's 100 epochs, and the fine-tune with the paper's regularisation recipe
python experiments/study.py --data prepared/ucla --benchmark ucla-xview --pretrained runs/ucla_tiny32_35 \
    --num-frames 32 --seeds 0 1 2 --finetune-epochs 100 --rows scratch --config runs/cfg/nocurve.json \
    --output runs/study_ucla35_scratch100
python experiments/study.py --data prepared/ucla --benchmark ucla-xview --pretrained runs/ucla_tiny32_35 \
    --num-frames 32 --seeds 0 1 2 --finetune-epochs 100 --rows finetune --recipe paper --config runs/cfg/nocurve.json \
    --output runs/study_ucla35_ft100_paper
# Tenth session: Table 6 on the 35-minute checkpoint and its decoder fine-tune, three sampling seeds; the features
# come from a classifier fine-tuned 50 epochs on the 35-minute checkpoint
python experiments/finetune.py --data prepared/ucla --benchmark ucla-xview --checkpoint runs/ucla_tiny32_35 \
    --num-frames 32 --epochs 50 --batch-size 64 --num-workers 1 --materialize --recipe small --output runs/cls35
for s in 0 1 2; do for c in ucla_tiny32_35 ucla_tiny32_35_decft; do
  python experiments/generate.py sample --data prepared/ucla --benchmark ucla-xview --checkpoint runs/$c \
      --classifier runs/cls35 --num-samples 256 --steps 50 --workers 0 --render 0 --seed $s --output runs/gen10_${c}_s$s
done; done
# ... Table 5 on the fine-tuned decoder with reconstruction guidance, with RePaint resampling, and with both; the
# pretrained decoder with resampling
for run in "g3 --guidance 3" "r5 --resample 5" "r5g3 --resample 5 --guidance 3"; do
  set -- $run
  name=$1; shift
  python experiments/generate.py reconstruct --data prepared/ucla --benchmark ucla-xview \
      --checkpoint runs/ucla_tiny32_35_decft --frames 3,5,11 --num-samples 128 --steps 50 --workers 0 --render 0 \
      "$@" --output runs/recon10_decft_$name
done
python experiments/generate.py reconstruct --data prepared/ucla --benchmark ucla-xview --checkpoint runs/ucla_tiny32_35 \
    --frames 3,5,11 --num-samples 128 --steps 50 --workers 0 --render 0 --resample 5 --output runs/recon10_pre_r5
# ... the semi-supervised study resumed with small t_s (10, 30, 50) added
python experiments/study.py --data prepared/ucla --benchmark ucla-xview --pretrained runs/ucla_tiny32_35 \
    --num-frames 32 --seeds 0 1 2 3 4 --finetune-epochs 50 --rows semi --aug-t-start 1 10 30 50 100 300 500 \
    --config runs/cfg/nocurve.json --output runs/study_ucla35_semi
# ... the per-joint probe's weight decay, 16 cached views, seeds 0-2
for wd in 0.0001 0.001 0.01; do
  echo "{\"weight_decay\": $wd}" > runs/probe10/wd$wd.json
  for s in 0 1 2; do
    python experiments/linear_eval.py --data prepared/ucla --benchmark ucla-xview --checkpoint runs/ucla_tiny32_35 \
        --feature per_joint --epochs 100 --batch-size 64 --lr 0.1 --num-frames 32 --num-workers 0 --materialize \
        --seed $s --cache-views 16 --config runs/probe10/wd$wd.json --output runs/probe10/wd${wd}_seed$s
  done
done
# ... the DDIM and MAE baselines at the same 35-minute budget on both cores, one after the other, then their
# reconstructions (default protocols: RePaint resampling 5 for DDIM) and DDIM's samples for Table 6
for m in ddim mae; do
  python experiments/pretrain.py --config configs/ucla_tiny32_pretrain.json --method $m --budget-minutes 35 \
      --output runs/ucla_tiny32_35_$m
  python experiments/generate.py reconstruct --data prepared/ucla --benchmark ucla-xview \
      --checkpoint runs/ucla_tiny32_35_$m --frames 3,5,11 --num-samples 128 --steps 50 --workers 0 --render 0 \
      --output runs/recon10_${m}35
done
for s in 0 1 2; do
  python experiments/generate.py sample --data prepared/ucla --benchmark ucla-xview --checkpoint runs/ucla_tiny32_35_ddim \
      --classifier runs/cls35 --num-samples 256 --steps 50 --workers 0 --render 0 --seed $s --output runs/gen10_ddim35_s$s
done
# Eleventh session (an AMD EPYC box without AVX-512: fp32 by default): the 35-minute checkpoint retrained on one core
# (216 epochs), its 100-epoch decoder fine-tune, and Table 5's frame rows started from the linear interpolation of
# each gap (SDEdit, --init interpolation) at several strengths, beside the default start from noise
python experiments/pretrain.py --config configs/ucla_tiny32_pretrain.json --budget-minutes 35 --output runs/ucla_tiny32_35
python experiments/finetune_decoder.py --checkpoint runs/ucla_tiny32_35 --data prepared/ucla --epochs 100 \
    --output runs/ucla_tiny32_35_decft
for ck in ucla_tiny32_35_decft:ft ucla_tiny32_35:pre; do
  for init in "noise" "i0.5 --init interpolation --init-strength 0.5" "i0.3 --init interpolation --init-strength 0.3" \
              "i0.1 --init interpolation --init-strength 0.1" "i0.05 --init interpolation --init-strength 0.05" \
              "i0.02 --init interpolation --init-strength 0.02"; do
    set -- $init; name=$1; shift
    python experiments/generate.py reconstruct --data prepared/ucla --benchmark ucla-xview --checkpoint runs/${ck%%:*} \
        --frames 3,5,11 --parts "" --num-samples 128 --steps 50 --workers 0 --render 0 "$@" \
        --output runs/recon11_${ck##*:}_$name
  done
done
# ... the decoder's one-step denoising error per timestep, then the decoder fine-tuned on the cosine schedule and
# its frame rows from noise and from the interpolation
python benchmarks/denoise_error.py --checkpoint runs/ucla_tiny32_35_decft --data prepared/ucla --benchmark ucla-xview
python experiments/finetune_decoder.py --checkpoint runs/ucla_tiny32_35 --data prepared/ucla --epochs 100 \
    --schedule cosine --output runs/ucla_tiny32_35_decft_cos
python benchmarks/denoise_error.py --checkpoint runs/ucla_tiny32_35_decft_cos --data prepared/ucla --benchmark ucla-xview
for init in "noise" "i0.1 --init interpolation --init-strength 0.1" "i0.05 --init interpolation --init-strength 0.05" \
            "i0.02 --init interpolation --init-strength 0.02"; do
  set -- $init; name=$1; shift
  python experiments/generate.py reconstruct --data prepared/ucla --benchmark ucla-xview \
      --checkpoint runs/ucla_tiny32_35_decft_cos --frames 3,5,11 --parts "" --num-samples 128 --steps 50 --workers 0 \
      --render 0 "$@" --output runs/recon11_cos_$name
done
# Twelfth session (the same AMD box): the view alignment A/B. NW-UCLA prepared a second time with --option align=true
# (each sequence turned about y so that its right-to-left hip and shoulder line lies along +x), then the same
# 25-minute tiny pretraining on each copy, side by side, one core each, and the same probe and fine-tune rows
python experiments/prepare_data.py --format ucla --input ../shared/data/nw_ucla/all_sqe --output prepared/ucla_align \
    --option align=true
c=0
for v in base25:prepared/ucla align25:prepared/ucla_align; do
  OMP_NUM_THREADS=1 taskset -c $c python experiments/pretrain.py --config configs/ucla_tiny32_pretrain.json \
      --data ${v##*:} --budget-minutes 25 --output runs/ucla12_${v%%:*} &
  c=$((c + 1))
done; wait
for v in base25:prepared/ucla align25:prepared/ucla_align; do
  S="python experiments/study.py --data ${v##*:} --benchmark ucla-xview --pretrained runs/ucla12_${v%%:*} --num-frames 32 --config runs/cfg/nocurve.json"
  $S --seeds 0 1 2 --rows probe probe_random probe_raw knn nn_raw --output runs/study12_${v%%:*}_probe
  $S --seeds 0 1 2 --finetune-epochs 100 --rows finetune --output runs/study12_${v%%:*}_ft
done

# Thirteenth session (a slower AMD EPYC box, about 40-48 samples/s per core for the tiny model at 32 frames, against
# about 165 in the twelfth): the 60-minute studies of the yaw-aligned and the fully aligned (align=full) data, side by
# side, one core each
python experiments/prepare_data.py --format ucla --input ../shared/data/nw_ucla/all_sqe --output prepared/ucla_full \
    --option align=full
c=0
for v in align60:prepared/ucla_align full60:prepared/ucla_full; do
  OMP_NUM_THREADS=1 taskset -c $c python experiments/study.py --data ${v##*:} --benchmark ucla-xview --budget-minutes 60 \
      --num-frames 32 --seeds 0 1 2 --rows probe probe_random probe_raw knn nn_raw finetune --finetune-epochs 100 \
      --output runs/study13_${v%%:*} &
  c=$((c + 1))
done; wait

# Fourteenth session (the same box): fine-tune seeds 1 and 2 on the full60 checkpoint, side by side, one core each
# (seed 0 is the thirteenth session's, in runs/study13_full60)
for s in 1 2; do
  OMP_NUM_THREADS=1 taskset -c $((s - 1)) python experiments/study.py --data prepared/ucla_full --benchmark ucla-xview \
      --num-frames 32 --pretrained runs/study13_full60/pretrain --seeds $s --rows finetune --finetune-epochs 100 \
      --output runs/study14_full60_ft_s$s &
done; wait
# Seventeenth session: the align=full 60-minute pretraining on both cores (Ray Train, 2 workers, global batch 64),
# then the probe rows (3 seeds) and the fine-tune (seed 0), side by side, one core each
mkdir -p runs/cfg && echo '{"curve_points": 0}' > runs/cfg/nocurve.json
cat > runs/cfg/full60_2w.json <<'JSON'
{"data_dir": "prepared/ucla_full", "benchmark": "ucla-xview", "preset": "tiny", "num_frames": 32, "epochs": 100000,
 "budget_minutes": 60, "batch_size": 64, "lr": 1e-3, "lr_scaling": "none", "warmup_epochs": 10,
 "checkpoint_every": 25, "keep_checkpoints": 10000, "num_workers": 2, "output": "runs/study17_full60_2w", "seed": 0}
JSON
OMP_NUM_THREADS=1 python experiments/pretrain.py --config runs/cfg/full60_2w.json
OMP_NUM_THREADS=1 taskset -c 0 python experiments/study.py --data prepared/ucla_full --benchmark ucla-xview --num-frames 32 \
    --pretrained runs/study17_full60_2w --seeds 0 1 2 --rows probe probe_random probe_raw knn nn_raw \
    --config runs/cfg/nocurve.json --output runs/study17_probe &
OMP_NUM_THREADS=1 taskset -c 1 python experiments/study.py --data prepared/ucla_full --benchmark ucla-xview --num-frames 32 \
    --pretrained runs/study17_full60_2w --seeds 0 --rows finetune --finetune-epochs 100 \
    --config runs/cfg/nocurve.json --output runs/study17_ft_s0 &
wait
# ... the probe of one kept checkpoint (epoch 150, seed 0), to place the 581-epoch probe against the 144-epoch one
python experiments/linear_eval.py --data prepared/ucla_full --benchmark ucla-xview \
    --checkpoint runs/study17_full60_2w/checkpoints/epoch_00150 --feature per_joint --epochs 100 --batch-size 64 \
    --lr 0.1 --num-frames 32 --num-workers 0 --materialize --seed 0 --cache-views 16 --output runs/probe17/epoch00150

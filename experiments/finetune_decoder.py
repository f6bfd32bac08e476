"""Fine-tune the MacDiff decoder with the encoder frozen and the global representation as the only condition.

    python experiments/finetune_decoder.py --checkpoint PRETRAIN_RUN --data DIR --output RUN_DIR \
        [--benchmark NAME] [--epochs 100] [--batch-size 64] [--lr 2.5e-4] [--encoder-view masked|full] [--smoke-test]

Paper Sec. 4.4: "fine-tuned for another 100 epochs with the encoder fixed and only global representations"
(macdiff_ray/train/decoder_finetune.py). The encoder's weights stay bit for bit the pretraining checkpoint's.
Runs in this process (no Ray; the GPU when there is one). Re-running the same command resumes from the newest
checkpoint. ``generate.py reconstruct --checkpoint RUN_DIR`` then uses the paper's protocol (global condition,
RePaint-style inpainting) and ``generate.py sample`` the fine-tuned decoder (Table 6, "+ fine-tune").
``--smoke-test``: synthetic data and an untrained tiny checkpoint in a temp dir, 2 short epochs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray import console  # noqa: E402
from macdiff_ray.cli import add_console_flags, merge_values, parser, smoke_dataset, start_console  # noqa: E402
from macdiff_ray.config import ConfigError, from_dict  # noqa: E402
from macdiff_ray.diffusion import SCHEDULES  # noqa: E402
from macdiff_ray.train.decoder_finetune import DecoderFinetuneConfig, run_decoder_finetune  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = parser(
        __doc__.split("\n\n")[0],
        "python experiments/finetune_decoder.py --checkpoint runs/ucla_tiny32 --data prepared/ucla --epochs 100 "
        "--output runs/ucla_tiny32_decft",
        "RUN_DIR/config.json, results.json (loss per epoch, the encoder digest), checkpoints/epoch_XXXXX/ (what "
        "generate.py reconstruct / sample take), ray.log",
    )
    p.add_argument("--checkpoint", help="pretraining checkpoint dir, checkpoint.pt or run dir (MacDiff)")
    p.add_argument("--data", dest="data_dir", help="the prepared dataset it was pretrained on")
    p.add_argument("--benchmark", help="default: the checkpoint's")
    p.add_argument("--output", help="run directory (or s3:// URI); re-use it to resume")
    p.add_argument("--epochs", type=int, help="default 100 (the paper's)")
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--encoder-view", dest="encoder_view", choices=("masked", "full"),
                   help="what the frozen encoder sees: a pretraining mask (default) or every token")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="the noise schedule to fine-tune the decoder on (default: the checkpoint's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int)
    p.add_argument("--config", help="JSON/YAML file of DecoderFinetuneConfig keys")
    p.add_argument("--smoke-test", action="store_true", help="untrained tiny checkpoint on synthetic data, 2 epochs")
    add_console_flags(p)
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> DecoderFinetuneConfig:
    smoke = {"epochs": 2, "batch_size": 16, "max_steps_per_epoch": 3, "smoke_test": True}
    values = merge_values(args, smoke)
    if args.smoke_test:
        from macdiff_ray.augment.offline import save_random_checkpoint

        tmp = Path(tempfile.mkdtemp(prefix="macdiff_decft_smoke_"))
        if "data_dir" not in values:
            values["data_dir"] = smoke_dataset(num_samples=64)
            values.setdefault("benchmark", "synthetic")
        if "checkpoint" not in values:
            values["checkpoint"] = str(save_random_checkpoint(values["data_dir"], values.get("benchmark", "synthetic"),
                                                              tmp / "pretrain"))
        values.setdefault("output", str(tmp / "decft"))
    return from_dict(DecoderFinetuneConfig, values)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = build_config(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    start_console(args, cfg.output)
    res = run_decoder_finetune(cfg)
    console.summary(
        f"decoder fine-tuning done: {res['final_epoch']} epochs, final loss {res['final_loss']:.4f}, encoder "
        f"unchanged: {res['encoder_unchanged']}, {res['wall_time_s']:.0f} s",
        {"results": f"{cfg.output}/results.json", "checkpoint": res["checkpoint"]},
    )
    console.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

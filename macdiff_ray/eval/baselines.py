"""The four NW-UCLA cross-view reference rows, each one command (see experiments/linear_eval.py, finetune.py):

(a) linear probe of a pretrained encoder; (b) the same preset randomly initialised, frozen, probed the same way;
(c) a linear classifier on raw normalised coordinates; (d) the same encoder trained supervised from scratch.
:func:`baseline_commands` prints them; :func:`baseline_configs` gives the config dicts (used by tests).
"""

from __future__ import annotations


def baseline_configs(data: str, checkpoint: str, out: str, preset: str = "tiny", epochs: int = 100,
                     num_frames: int = 120) -> dict[str, tuple[str, dict]]:
    """name -> (protocol, config dict) for rows (a)-(d)."""
    common = {"data_dir": data, "benchmark": "ucla-xview", "epochs": epochs, "num_frames": num_frames}
    return {
        "a_pretrained_linear": ("linear", dict(common, checkpoint=checkpoint, output=f"{out}/a_pretrained_linear",
                                               label=f"MacDiff {preset} (pretrained, linear)")),
        "b_random_linear": ("linear", dict(common, random_init=True, preset=preset, output=f"{out}/b_random_linear",
                                           label=f"random-init {preset} (frozen, linear)")),
        "c_raw_linear": ("linear", dict(common, feature="raw", output=f"{out}/c_raw_linear",
                                        label="raw coordinates (linear)")),
        "d_scratch_supervised": ("finetune", dict(common, random_init=True, preset=preset,
                                                  output=f"{out}/d_scratch_supervised",
                                                  label=f"{preset} supervised from scratch")),
    }


def baseline_commands(data: str, checkpoint: str, out: str, preset: str = "tiny", epochs: int = 100,
                      num_frames: int = 120) -> list[str]:
    cmds = []
    for name, (proto, c) in baseline_configs(data, checkpoint, out, preset, epochs, num_frames).items():
        script = "experiments/linear_eval.py" if proto == "linear" else "experiments/finetune.py"
        src = (f"--checkpoint {checkpoint}" if "checkpoint" in c else
               f"--random-init --preset {preset}" if c.get("random_init") else "--feature raw")
        cmds.append(f"python {script} --data {data} --benchmark ucla-xview {src} --epochs {epochs} "
                    f"--num-frames {num_frames} --label '{c['label']}' --output {c['output']}")
    cmds.append(f"python experiments/report.py --runs {out} --out {out}/table.md")
    return cmds

"""The paper's published numbers (Wu et al., ECCV 2024, Tables 1-10; copied from ../shared/paper/MacDiff-paper.md),
for printing beside our measured values. Accuracies in %, MPJPE as printed in Table 5, generation metrics as in
Table 6. Only the rows this project can run are listed (MacDiff and the baselines built on the same code); the
paper's other competitors are named in the table captions.
"""

from __future__ import annotations

# Table 1: linear evaluation, joint stream.
T1_COLUMNS = ("NTU60 xsub", "NTU60 xview", "NTU120 xsub", "NTU120 xset", "PKU I")
T1 = {
    "SkeletonMAE": (74.8, 77.7, 72.5, 73.5, 82.8),
    "MAMP": (84.9, 89.1, 78.6, 79.1, 92.2),
    "MacDiff": (86.4, 91.0, 79.4, 80.2, 92.8),
}
# Table 2: supervised fine-tuning.
T2_COLUMNS = ("NTU60 xsub", "NTU60 xview")
T2 = {"SkeletonMAE": (88.5, 94.7), "MAMP": (93.1, 97.5), "MacDiff": (92.7, 97.3)}
# Table 3: transfer to PKU-MMD II (linear evaluation), from each source.
T3_COLUMNS = ("NTU60 -> PKU II", "NTU120 -> PKU II", "PKU I -> PKU II")
T3 = {"SkeletonMAE": (58.4, 61.0, 62.5), "MAMP": (70.6, 73.2, 70.1), "MacDiff": (72.2, 73.4, 71.4)}
# Table 4: semi-supervised fine-tuning, NTU60 xsub (1 %, 2 %, 10 %) and xview; None = not reported.
T4_FRACTIONS = (0.01, 0.02, 0.10)
T4_COLUMNS = ("xsub 1%", "xsub 2%", "xsub 10%", "xview 1%", "xview 2%", "xview 10%")
T4 = {
    "SkeletonMAE": (54.4, None, 80.6, 54.6, None, 83.5),
    "MAMP": (66.0, 80.3, 88.0, 68.7, 83.5, 91.5),
    "MacDiff w/o aug": (65.6, 80.7, 88.2, 77.3, 84.1, 92.5),
    "MacDiff": (72.0, 82.1, 89.2, 79.2, 85.6, 93.1),
}
# Table 5: motion reconstruction, NTU60 xsub, MPJPE (10 / 20 / 40 of 120 frames, one body part).
T5_FRAMES = (10, 20, 40)
T5_COLUMNS = ("10 frames", "20 frames", "40 frames", "1 body part")
T5 = {
    "SkeletonMAE": (0.191, 0.221, 0.255, 0.319),
    "DDIM": (0.041, 0.087, 0.205, 0.251),
    "MacDiff": (0.033, 0.089, 0.147, 0.241),
}
# Table 6: unconditional generation, NTU60 xsub.
T6_COLUMNS = ("FID", "KID", "diversity", "precision", "recall")
T6 = {
    "Real data": (0.05, 0.0001, 2.09, 0.886, 0.908),
    "MDM-orig": (3.49, 0.0328, 1.51, 0.047, 0.030),
    "MDM": (1.06, 0.0059, 1.43, 0.828, 0.070),
    "DDIM": (1.32, 0.0082, 1.89, 0.576, 0.537),
    "MacDiff": (1.52, 0.0085, 1.96, 0.414, 0.289),
    "+ fine-tune": (1.30, 0.0070, 1.97, 0.460, 0.505),
}
# Table 7: masking strategy and ratio, NTU60 xsub linear evaluation.
T7_STRATEGIES = {"temporal": 84.1, "tube": 83.1, "spatial_temporal": 85.3, "random": 86.4, "motion_aware": 85.5}
T7_RATIOS = {0.0: 79.3, 0.5: 82.7, 0.8: 83.8, 0.9: 86.4, 0.95: 83.6}
# Table 8: noise schedule, NTU60 xsub linear evaluation (tau of the tau-mixture; "linear": DDPM's linear betas).
T8 = {1.5: 85.7, 1.0: 86.4, 0.5: 85.8, -0.5: 85.2, -1.0: 83.8, "linear": 83.4}
# Table 9: diffusion augmentation, NTU60 xsub semi-supervised; t_s at 1 % (lambda 2.0), lambda at 1 % and 10 %.
T9_TSTART = {0: 65.6, 100: 66.4, 300: 71.4, 500: 72.0, 900: 68.7}
T9_LAMBDA = {0.0: (65.6, 88.2), 0.25: (67.8, 89.1), 0.5: (68.2, 89.2), 1.0: (70.0, 88.5), 2.0: (72.0, None)}
# Table 10: decoder depth, NTU60 xsub linear evaluation.
T10 = {2: 84.8, 3: 86.4, 4: 86.0, 5: 85.9}

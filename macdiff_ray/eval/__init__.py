"""Evaluation: linear probes, fine-tuning, reports and the generative-task metrics.

``gen_metrics`` holds MPJPE, FID, KID, diversity and k-NN precision/recall (paper Sec. 4.4, Tables 5-6);
``occlusion`` holds the frame/body-part occlusion masks (True = known) and the simple fill baselines.
"""

"""Evaluation protocols: linear probes, kNN, fine-tuning (semi-supervised, transfer), the learning study and reports.

Generation with the decoder (reconstruction, sampling and their metrics) is :mod:`macdiff_ray.generate`.
"""

"""macdiff-ray: MacDiff skeleton representation learning on Ray.

Pipeline folders: ``data`` (raw formats -> Parquet shards -> Ray Data batches), ``model`` (encoder and AdaLN
decoder), ``diffusion`` (pure schedule/sampling functions), ``train`` (Ray Train pretraining), ``eval``
(probes, fine-tuning, reports, generative metrics), ``augment`` (diffusion augmentation actors), ``tune``
(Ray Tune sweeps), ``viz`` (skeleton pictures).

One tensor layout is used everywhere: a skeleton sequence is ``(T, V, C)`` for one person (frames, joints,
coordinates), batched as ``(N, T, V, C)``; where several persons are kept, ``(N, M, T, V, C)``.
"""

__version__ = "0.1.0"

"""Generation with the diffusion decoder (paper Sec. 4.4, Tables 5 and 6): a use of the pretrained decoder, apart
from the evaluation protocols of :mod:`macdiff_ray.eval`.

One file per idea:

* ``occlusion``: occlusion masks (True = known) and the model-free fill baselines;
* ``inpainting``: the decoder conditions and RePaint-style inpainting (``reconstruct_batch``), mae's regression;
* ``sampling``: unconditional DDIM sampling (``sample_batch``);
* ``metrics``: MPJPE (also on native frames), FID, KID, diversity, precision/recall;
* ``features``: the action-classifier features the generation metrics are computed on;
* ``workers``: the frozen model as Ray actors or in this process, the chunk runner;
* ``data``: the split, the training mean pose and the native frames the drivers read;
* ``reconstruct`` / ``sample``: the two drivers with their configs and tables; ``render``: pictures;
* ``showcase``: the quickstart's one picture.
"""

from macdiff_ray.generate.common import CLIP_X0, chunk_seed, config_from_args
from macdiff_ray.generate.inpainting import CONDITIONS, INITS, RECON_GUIDANCE, RESAMPLE, reconstruct_batch
from macdiff_ray.generate.reconstruct import ReconstructConfig, run_reconstruct
from macdiff_ray.generate.render import render_sequences
from macdiff_ray.generate.sample import SampleConfig, run_sample
from macdiff_ray.generate.sampling import SAMPLE_ETA, sample_batch

__all__ = [
    "CLIP_X0", "CONDITIONS", "INITS", "RECON_GUIDANCE", "RESAMPLE", "SAMPLE_ETA", "ReconstructConfig", "SampleConfig",
    "chunk_seed", "config_from_args", "reconstruct_batch", "render_sequences", "run_reconstruct", "run_sample",
    "sample_batch",
]

"""MacDiff model: config and presets, encoder, AdaLN diffusion decoder, the pretraining wrapper."""

from macdiff_ray.model.config import PRESETS, ModelConfig, model_preset
from macdiff_ray.model.decoder import DiffusionDecoder
from macdiff_ray.model.encoder import SkeletonEncoder, mask_from_ids, random_masking
from macdiff_ray.model.layers import initialize_weights, patchify, unpatchify
from macdiff_ray.model.macdiff import Condition, MacDiff, count_parameters, encoder_state_dict, token_uniformity

__all__ = [
    "ModelConfig",
    "PRESETS",
    "model_preset",
    "SkeletonEncoder",
    "DiffusionDecoder",
    "MacDiff",
    "Condition",
    "encoder_state_dict",
    "count_parameters",
    "token_uniformity",
    "random_masking",
    "mask_from_ids",
    "initialize_weights",
    "patchify",
    "unpatchify",
]

"""MacDiff model: config and presets (size and method), masking strategies, encoder, AdaLN diffusion decoder, the
pretraining wrapper."""

from macdiff_ray.model.config import (
    METHOD_PRESETS, METHODS, PRESETS, ModelConfig, method_overrides, model_preset,
)
from macdiff_ray.model.decoder import DiffusionDecoder
from macdiff_ray.model.encoder import SkeletonEncoder, mask_from_ids
from macdiff_ray.model.masking import MASKINGS, mask_tokens, num_kept, random_masking
from macdiff_ray.model.layers import initialize_weights, patchify, unpatchify
from macdiff_ray.model.macdiff import Condition, MacDiff, count_parameters, encoder_state_dict, token_uniformity

__all__ = [
    "ModelConfig",
    "PRESETS",
    "model_preset",
    "METHODS",
    "METHOD_PRESETS",
    "method_overrides",
    "MASKINGS",
    "mask_tokens",
    "num_kept",
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

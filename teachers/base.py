"""Compatibility name of ``distill.modeldir`` (the model contract and model directories moved there): code and
scripts that import ``teachers.base`` keep working; new code imports ``distill.modeldir``."""
from tinydistill.distill.modeldir import (FORMAT_VERSION, HEAD_PREFIX, MANIFEST, WEIGHTS, ModelLoadError, build_from_manifest,
                              build_model, count_parameters, load_model_dir, load_state_file, load_state_strict,
                              load_with_matching_heads, read_manifest, save_model_dir)

_build_from_manifest = build_from_manifest  # its old private name (experiments/multitask.py)

__all__ = ["FORMAT_VERSION", "HEAD_PREFIX", "MANIFEST", "WEIGHTS", "ModelLoadError", "build_from_manifest",
           "build_model", "count_parameters", "load_model_dir", "load_state_file", "load_state_strict",
           "load_with_matching_heads", "read_manifest", "save_model_dir"]

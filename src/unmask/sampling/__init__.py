"""Samplers, standing apart from models and objectives: tokens in, SampleOutput out.

This is the minimal set the demo needs (AR decoding, MDM low-confidence
decoding); every sampler shares the float64 Gumbel-max of `gumbel.py`.
"""

from unmask.sampling.ar import generate_ar
from unmask.sampling.gumbel import sample_categorical
from unmask.sampling.mdm import SampleOutput, generate_mdm

__all__ = ["SampleOutput", "generate_ar", "generate_mdm", "sample_categorical"]

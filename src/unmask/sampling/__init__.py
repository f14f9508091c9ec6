"""Samplers, standing apart from models and objectives: tokens in, SampleOutput out.

AR decoding (`ar.py`) and every MDM sampler (`mdm.py`, configured by one
`SamplerConfig`); all share the exact float64 categorical draws of `gumbel.py`.
`generate` (`decoder.py`) is the one entry point: it calls the decoder a run's objective names.

Exports load on first use, so the CLI can build its options from `SamplerConfig`
without importing torch.
"""

from unmask._lazy import lazy_exports

EXPORTS = {
    "SampleOutput": "unmask.sampling.base",
    "SamplerConfig": "unmask.sampling.config",
    "generate": "unmask.sampling.decoder",
    "left_pad": "unmask.sampling.ar",
    "sample_ar": "unmask.sampling.ar",
    "sample_categorical": "unmask.sampling.gumbel",
    "sample_mdm": "unmask.sampling.mdm",
}
__all__ = sorted(EXPORTS)

__getattr__ = lazy_exports("unmask.sampling", EXPORTS)

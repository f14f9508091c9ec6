"""SamplerConfig: options grouped by family; the flat names of before still work everywhere."""

from __future__ import annotations

import pytest

from unmask import cli
from unmask.config import ConfigError
from unmask.sampling.config import FLAT_NAMES, CommitConfig, ConvConfig, SamplerConfig


def test_flat_names_round_trip_through_the_groups():
    cfg = SamplerConfig.from_flat(method="threshold", block_length=32, cache="dual", conv=True, conv_kernel=9)
    assert cfg.commit == CommitConfig(method="threshold", block_length=32)
    assert cfg.cache.kv == "dual" and cfg.conv == ConvConfig(enabled=True, kernel=9)
    assert SamplerConfig.from_flat(**cfg.flat()) == cfg
    assert set(cfg.flat()) == set(FLAT_NAMES)
    assert cfg.mdm_only_options_set() == ["block_length", "cache", "conv", "conv_kernel", "method"]
    assert SamplerConfig.from_flat(temperature=0.7, top_k=5).mdm_only_options_set() == []  # AR options


def test_bad_values_are_named_by_their_flat_name():
    with pytest.raises(ConfigError, match="conv_kernel=4: must be odd"):
        SamplerConfig.from_flat(conv_kernel=4)
    with pytest.raises(ConfigError, match="unknown sampler option"):
        SamplerConfig.from_flat(methd="threshold")
    with pytest.raises(ConfigError, match="guidance needs full passes"):
        SamplerConfig.from_flat(cfg_scale=1.0, cache="prefix")


@pytest.mark.parametrize(
    "flags",
    [
        ["--sampler.method", "threshold", "--sampler.block_length", "4", "--sampler.cache", "dual"],  # flat, as before
        ["--sampler.commit.method", "threshold", "--sampler.commit.block_length", "4", "--sampler.cache.kv", "dual"],
        ["--sampler.method=threshold", "--sampler.commit.block_length=4", "--sampler.cache.kv=dual"],
    ],
)
def test_old_and_grouped_flags_parse_to_the_same_config(flags):
    parser = cli.build_parser()
    args = cli.migrate_flags(["sample", "RUN", *flags])
    sampler = parser.instantiate(parser.parse_args(args)).sample.sampler
    assert sampler == SamplerConfig.from_flat(method="threshold", block_length=4, cache="dual")

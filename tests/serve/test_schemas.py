"""The request schema is generated from SamplerConfig: every sampler option is a request field, with its default."""

from __future__ import annotations

import dataclasses

import pytest

from unmask.sampling.config import FLAT_NAMES, GROUPS, SamplerConfig
from unmask.serve.schemas import SAMPLER_FIELDS, CompletionRequest, InfillRequest, OpenAIFields

REQUIRED = {CompletionRequest: {"model": "m"}, InfillRequest: {"model": "m", "text": "a ____ b"}}
OPENAI_DEFAULTS = {"temperature": 1.0}
"""Where the API keeps OpenAI's default instead of the sampler's."""


def served_options() -> dict[str, object]:
    """Every leaf field of SamplerConfig (through its groups) under its flat name, with its default; EDLM's energy
    options are not served. A field missing from FLAT_NAMES fails here, so it cannot be left out of the API."""
    flat = {place: name for name, place in FLAT_NAMES.items()}
    default = SamplerConfig()
    options = {}
    for f in dataclasses.fields(SamplerConfig):
        group = f.name if f.name in GROUPS else None
        places = [(group, g.name) for g in dataclasses.fields(GROUPS[group])] if group else [(None, f.name)]
        for group, key in places:
            assert (group, key) in flat, f"SamplerConfig field {group}.{key} has no flat name in FLAT_NAMES"
            if group != "energy":
                options[flat[group, key]] = getattr(getattr(default, group) if group else default, key)
    return options


@pytest.mark.parametrize("model", [CompletionRequest, InfillRequest], ids=lambda m: m.__name__)
def test_every_sampler_option_is_a_request_field_with_the_sampler_default(model):
    options = served_options()
    assert set(options) == set(SAMPLER_FIELDS)
    for name, default in options.items():
        assert model.model_fields[name].default == OPENAI_DEFAULTS.get(name, default), name
        assert model.model_fields[name].description, name
        request = model.model_validate({**REQUIRED[model], name: default})  # accepted, with its own value
        assert request.sampler_options().get(name) == default  # None: left to the sampler


def test_a_request_that_sets_nothing_decodes_with_the_sampler_defaults_at_openai_temperature():
    request = CompletionRequest.model_validate(REQUIRED[CompletionRequest])
    sampler = SamplerConfig.from_flat(**request.sampler_options())
    assert sampler == dataclasses.replace(SamplerConfig(), **OPENAI_DEFAULTS)
    assert set(OPENAI_DEFAULTS) <= set(OpenAIFields.model_fields)

"""Request and response bodies of the HTTP API (pydantic: the published OpenAPI schema).

The sampler's request fields are generated from `SamplerConfig` (its flat names, defaults and field
docstrings), so an option added there is served without an edit here. The request models check
shapes and JSON types only; the sampler's values and their combinations are checked by
`SamplerConfig.from_flat`, the one place that knows them, and lengths by the app against the run and
the server's limits.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from unmask.config import field_docs
from unmask.sampling.config import AR_OPTIONS, FLAT_NAMES, GROUPS, SamplerConfig

SAMPLER_FIELDS = tuple(name for name, (group, _) in FLAT_NAMES.items() if group != "energy")
"""The flat names of `SamplerConfig.from_flat` a request may set (EDLM's energy run is not served)."""


class OpenAIFields(BaseModel):
    """OpenAI's own decoding fields, with OpenAI's defaults (its temperature is 1; the sampler's is 0)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON's own types: true is no number, "3" no integer

    temperature: float = Field(1.0, description="Sampling temperature (0 = argmax); OpenAI's default 1.")
    top_p: float = Field(1.0, description="Nucleus: keep the smallest set of tokens with probability >= top_p.")


def json_type(hint: Any) -> Any:
    """What a request sends for a config field of type `hint`: X for X | None (null is the default), a plain
    string for a Literal, so that a wrong choice is named by from_flat with the allowed values."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Literal:
        return type(args[0])
    if args:
        return json_type(next(a for a in args if a is not type(None)))
    return hint


def sampler_field(name: str) -> tuple[Any, Any]:
    """The request field of a flat sampler option: its JSON type or null, the sampler's default, its docstring."""
    group, key = FLAT_NAMES[name]
    cls = SamplerConfig if group is None else GROUPS[group]
    hint = typing.get_type_hints(cls)[key]
    description = ("" if name in AR_OPTIONS else "MDM: ") + field_docs(cls)[key]
    return json_type(hint) | None, Field(getattr(cls(), key), description=description)


SamplerOptions = create_model(
    "SamplerOptions",
    __base__=OpenAIFields,
    **{name: sampler_field(name) for name in SAMPLER_FIELDS if name not in OpenAIFields.model_fields},
)


class SamplerFields(SamplerOptions):
    """Decoding options: OpenAI's temperature / top_p, and unmask's sampler as extra fields (MDM runs)."""

    seed: int | None = Field(
        None, ge=0, lt=2**63, description="Seed of this request's draws (decoded in its own batch)."
    )
    n: int = Field(1, ge=1, description="Samples per prompt.")
    stream: bool = Field(False, description="Server-sent events: one per MDM denoising step, one per AR token.")
    user: str | None = Field(None, description="Accepted for OpenAI compatibility; ignored.")

    def sampler_options(self) -> dict[str, Any]:
        """The sampler fields of the request (None = the sampler's default)."""
        return {k: getattr(self, k) for k in SAMPLER_FIELDS if getattr(self, k) is not None}


class CompletionRequest(SamplerFields):
    """POST /v1/completions: OpenAI's completions fields (model, prompt, max_tokens, temperature, top_p, stop,
    n, stream) and the sampler's. In an MDM prompt each ____ is a blank of 8 masks, infilled too."""

    model: str = Field(description="A served run (GET /v1/models).")
    prompt: str | list[str] = Field("", description="Text to continue, or a list of them.")
    max_tokens: int = Field(16, ge=1, description="Tokens to generate after each prompt.")
    stop: str | list[str] | None = Field(None, description="Up to 4 strings: the text ends before the first.")


class InfillRequest(SamplerFields):
    """POST /v1/infill: text whose masked spans an MDM run fills; every other token stays."""

    model: str = Field(description="A served MDM run.")
    text: str = Field(description="Text with blanks: each ____ (4+ underscores) is blank_length masks.")
    blank_length: int = Field(8, ge=1, description="Mask tokens per ____ blank.")
    mask_spans: list[str] | None = Field(None, description="Token spans START-END of the encoded text to mask too.")


class Choice(BaseModel):
    index: int
    text: str = Field(description="Completion: the generated text after the prompt. Infill: the whole text.")
    logprobs: None = None
    finish_reason: str = Field(description="stop (end of document or a stop string) or length.")
    fills: list[str] | None = Field(None, description="Infill: the text of each masked span, in order.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: str = Field(description="text_completion (or infill)")
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    unmask: dict[str, Any] = Field(description="decoder, steps, seconds, the sampler's settings")


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "unmask"
    objective: str
    decoder: str
    seq_len: int
    parameters: int


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    code: int


class ErrorResponse(BaseModel):
    error: ErrorBody

"""Request and response bodies of the HTTP API (pydantic: the published OpenAPI schema).

The request models check shapes and types only; the sampler's values and their combinations are
checked by `SamplerConfig.from_flat`, the one place that knows them, and lengths by the app
against the run and the server's limits.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from unmask.sampling.config import METHODS

SAMPLER_FIELDS = (
    "temperature", "top_p", "top_k", "method", "steps", "block_length", "threshold", "confidence", "cache",
    "skip_unchanged", "conv", "conv_g", "conv_kernel", "conv_scale", "cfg_scale",
)  # fmt: skip
"""The flat names of `SamplerConfig.from_flat` a request may set (EDLM's energy run is not served)."""


class SamplerFields(BaseModel):
    """Decoding options: OpenAI's temperature / top_p, and unmask's sampler as extra fields (MDM runs)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON's own types: true is no number, "3" no integer

    temperature: float = Field(1.0, description="Sampling temperature (0 = argmax); OpenAI's default 1.")
    top_p: float = Field(1.0, description="Nucleus: keep the smallest set of tokens with probability >= top_p.")
    top_k: int | None = Field(None, description="Keep only the k most likely tokens; 0 = all.")
    method: str | None = Field(None, description=f"MDM: which predictions a step commits: {', '.join(METHODS)}.")
    steps: int | None = Field(None, description="MDM: denoising steps over the generation; default one per token.")
    block_length: int | None = Field(None, description="MDM: semi-autoregressive blocks of this many tokens.")
    threshold: float | None = Field(None, description="MDM method threshold: commit every token above it.")
    confidence: str | None = Field(None, description="MDM: prob, margin or entropy.")
    cache: str | None = Field(None, description="MDM: Fast-dLLM KV cache: none, prefix or dual.")
    skip_unchanged: bool | None = Field(None, description="MDM: reuse the output of a step that changed nothing.")
    conv: bool | None = Field(None, description="MDM: convolutional decoding.")
    conv_g: str | None = Field(None, description="MDM conv gate: tanh, linear or none.")
    conv_kernel: int | None = Field(None, description="MDM conv window (odd).")
    conv_scale: float | None = Field(None, description="MDM conv scale c.")
    cfg_scale: float | None = Field(None, description="MDM: unsupervised classifier-free guidance; 0 = off.")
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="Seed of this request's draws (decoded in its own batch)."
    )
    n: int = Field(1, ge=1, description="Samples per prompt.")
    stream: bool = Field(False, description="Server-sent events: one per MDM denoising step, one per AR token.")
    user: str | None = Field(None, description="Accepted for OpenAI compatibility; ignored.")

    def sampler_options(self) -> dict[str, Any]:
        """The sampler fields the request set (None = the sampler's default)."""
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

"""Quality of generated text: generative perplexity under an AR judge, and judge-free statistics.

Every metric reads a sample as the tokens generated after its prompt, up to its first
end-of-document: what follows belongs to another document (AR decoding fills it with
EOS; a diffusion sample may start a new text there). Generative perplexity scores that
EOS too (ending is part of the text's likelihood); the statistics count text tokens only.
Lower-is-better and higher-is-better pull apart: a sampler can reach a low generative
perplexity by repeating itself, which the entropy and the repetition rates expose, so
report them together, at the same sample count and length for every method.

  unigram_entropy   mean over samples of the entropy (nats) of each sample's token counts
  repetition_rate   fraction of n-grams equal to an earlier n-gram of the same sample (rep-n)
  distinct_n        distinct n-grams / all n-grams over every sample (Li et al. 2016)
  eos_rate          fraction of generated positions holding EOS (an EOS flood raises it)

Pooled rates (repetition, distinct) weigh every n-gram alike; a statistic with nothing to
count (no sample long enough) is NaN.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch

from unmask.config import check
from unmask.objectives.ar import ar_token_nll


def truncate_at_eos(generated: torch.Tensor | Sequence[list[int]], eod_id: int) -> list[list[int]]:
    """Each row of generated (B, L), or of rows of any lengths, up to (not including) its first eod_id."""
    rows = []
    for row in generated.tolist() if isinstance(generated, torch.Tensor) else generated:
        rows.append(row[: row.index(eod_id)] if eod_id in row else row)
    return rows


def _ngrams(seq: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def unigram_entropy(samples: Sequence[Sequence[int]]) -> float:
    """Mean over non-empty samples of -Σ_w f_w log f_w, f_w the frequency of token w in the sample (nats)."""
    entropies = []
    for seq in samples:
        if seq:
            freq = [c / len(seq) for c in Counter(seq).values()]
            entropies.append(-sum(f * math.log(f) for f in freq))
    return sum(entropies) / len(entropies) if entropies else math.nan


def repetition_rate(samples: Sequence[Sequence[int]], n: int) -> float:
    """rep-n: the fraction of n-grams that repeat an n-gram seen earlier in the same sample."""
    check(n >= 1, f"n={n}: must be >= 1")
    repeats = total = 0
    for seq in samples:
        seen: set[tuple[int, ...]] = set()
        for gram in _ngrams(seq, n):
            repeats += gram in seen
            seen.add(gram)
            total += 1
    return repeats / total if total else math.nan


def distinct_n(samples: Sequence[Sequence[int]], n: int) -> float:
    """distinct-n: distinct n-grams over all samples / all n-grams (n-grams never cross samples)."""
    check(n >= 1, f"n={n}: must be >= 1")
    grams = [g for seq in samples for g in _ngrams(seq, n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def eos_rate(generated: torch.Tensor, eod_id: int) -> float:
    """Fraction of the generated positions (B, L) that hold eod_id, wherever they are."""
    return float((generated == eod_id).double().mean()) if generated.numel() else math.nan


@torch.no_grad()
def generative_perplexity(
    judge: torch.nn.Module,
    samples: torch.Tensor,
    prompt_len: int,
    eod_id: int,
    prompt_mask: torch.Tensor | None = None,
    batch_size: int = 32,
    query_is_target: bool = False,
) -> float:
    """exp(mean NLL) of the generated tokens of samples (B, P + L) under an AR judge, given their prompt.

    Scored per sample: the tokens after the prompt up to and including the first eod_id, each
    conditioned on everything before it (the prompt included); the mean is over all scored
    tokens of all samples. With no prompt (prompt_len 0) the judge is given eod_id as the
    context, as a document follows an end-of-document in the training stream.
    prompt_mask: (B, P) True for real prompt tokens, padding on the left (as `sample_ar` takes).
    query_is_target: the judge is an `ar_orderings` run (queries rotated to the next position).
    The judge must share the tokenizer (ids are not retokenized) and cover P + L tokens.
    """
    cfg = judge.cfg
    check(cfg.causal, "judge: needs an AR run (causal attention), not an MDM run")
    check(batch_size >= 1, f"batch_size={batch_size}: must be >= 1")
    B, T = samples.shape
    check(T > prompt_len, "samples: nothing generated after the prompt to score")
    samples = samples.cpu()
    real = torch.ones(B, T, dtype=torch.bool)
    if prompt_mask is not None:
        real[:, :prompt_len] = prompt_mask.bool().cpu()
    if prompt_len == 0:  # a lone EOS as the context of the first generated token
        samples = torch.cat([torch.full((B, 1), eod_id, dtype=samples.dtype), samples], 1)
        real, prompt_len, T = torch.cat([torch.ones(B, 1, dtype=torch.bool), real], 1), 1, T + 1
    top = int(samples.max())
    check(
        top < cfg.vocab_size,
        f"judge: token id {top} outside its vocabulary of {cfg.vocab_size}; it must share the samples' tokenizer",
    )
    need = T - 1 + (1 if query_is_target else 0)  # the judge reads T - 1 tokens; ar_orderings queries one further
    check(need <= cfg.seq_len, f"judge: samples of {T} tokens need seq_len >= {need}; the judge has {cfg.seq_len}")
    is_eod = samples[:, prompt_len:] == eod_id  # (B, L)
    last = torch.where(is_eod.any(1), is_eod.int().argmax(1), is_eod.shape[1] - 1)  # (B,) last scored index
    scored = torch.arange(is_eod.shape[1])[None] <= last[:, None]  # (B, L) up to and including the first EOS
    device = next(judge.parameters()).device
    nll = 0.0
    for lo in range(0, B, batch_size):
        hi = min(lo + batch_size, B)
        end = prompt_len + int(last[lo:hi].max()) + 1  # nothing after the batch's last scored token is read
        x, r = samples[lo:hi, :end].to(device), real[lo:hi, :end].to(device)
        pos = (r.cumsum(1) - 1).clamp_min(0)[:, :-1]  # per-row positions (left-padded prompts)
        inputs_scored = torch.zeros(hi - lo, end - 1, dtype=torch.bool, device=device)  # input j predicts x[:, j+1]
        inputs_scored[:, prompt_len - 1 :] = scored[lo:hi, : end - prompt_len].to(device)
        token_nll, _ = ar_token_nll(
            judge,
            x,
            inputs_scored,
            pos=pos,
            query_pos=pos + 1 if query_is_target else None,
            key_padding_mask=None if bool(r.all()) else r[:, :-1],
        )
        nll += float(token_nll.double().sum())
    return math.exp(nll / int(scored.sum()))


def text_quality(
    samples: torch.Tensor,
    eod_id: int,
    judge: torch.nn.Module | None = None,
    prompt_len: int = 0,
    prompt_mask: torch.Tensor | None = None,
    batch_size: int = 32,
    judge_query_is_target: bool = False,
) -> dict[str, float]:
    """Every metric of this module for samples (B, P + L), e.g. `SampleOutput.tokens`, as one flat dict.

    Keys: samples, gen_len, mean_length (tokens before the first EOS), gen_ppl (only with a judge),
    unigram_entropy, rep_2, rep_4, distinct_1, distinct_2, eos_rate.
    """
    generated = samples[:, prompt_len:]
    texts = truncate_at_eos(generated, eod_id)
    out: dict[str, float] = {
        "samples": len(texts),
        "gen_len": generated.shape[1],
        "mean_length": sum(map(len, texts)) / max(len(texts), 1),
    }
    if judge is not None:
        out["gen_ppl"] = generative_perplexity(
            judge, samples, prompt_len, eod_id, prompt_mask, batch_size, judge_query_is_target
        )
    out |= {
        "unigram_entropy": unigram_entropy(texts),
        "rep_2": repetition_rate(texts, 2),
        "rep_4": repetition_rate(texts, 4),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "eos_rate": eos_rate(generated, eod_id),
    }
    return out

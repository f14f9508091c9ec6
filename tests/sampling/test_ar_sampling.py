"""KV cache of the Transformer and the AR decoder built on it: cached == uncached, batched == alone."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare
from torch import nn

from unmask.config import ConfigError, ModelConfig
from unmask.model import Transformer
from unmask.sampling.ar import left_pad, next_token, sample_ar
from unmask.sampling.base import filter_logits


def random_model(
    causal: bool, vocab: int = 24, seq_len: int = 16, seed: int = 0, local_prior: float = 0.0
) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(size="tiny", vocab_size=vocab, seq_len=seq_len, causal=causal, local_prior=local_prior)
    model = Transformer(cfg).eval()
    with torch.no_grad():  # larger weights than the 0.02 init, so attention is far from uniform
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(10)
    return model


# --- KV cache -------------------------------------------------------------------------------------


LOCAL_PRIOR = pytest.mark.parametrize("local_prior", [0.0, 5.0], ids=["plain", "local_prior"])


@LOCAL_PRIOR
@pytest.mark.parametrize("causal", [True, False])
def test_prefix_cache_then_rest_equals_one_forward(causal, local_prior):
    model, x = (
        random_model(causal, local_prior=local_prior),
        torch.randint(0, 24, (2, 12), generator=torch.Generator().manual_seed(1)),
    )
    full = model(x)
    if causal:  # causal: the prefix's logits do not depend on what follows
        prefix_logits, kv = model(x[:, :5], return_kv=True)
        torch.testing.assert_close(prefix_logits, full[:, :5], atol=1e-5, rtol=0)
        rest = model(x[:, 5:], past_kv=kv)
        torch.testing.assert_close(rest, full[:, 5:], atol=1e-5, rtol=0)
        one_by_one = []
        for i in range(5, 12):  # token by token, growing the cache as a decoder does
            logits, new = model(x[:, i : i + 1], past_kv=kv, return_kv=True)
            kv = [(torch.cat([k, nk], 2), torch.cat([v, nv], 2)) for (k, v), (nk, nv) in zip(kv, new, strict=True)]
            one_by_one.append(logits)
        torch.testing.assert_close(torch.cat(one_by_one, 1), full[:, 5:], atol=1e-5, rtol=0)
    else:  # bidirectional: the cached keys of the whole sequence reproduce any block's logits
        _, kv = model(x, return_kv=True)
        prefix_kv = [(k[:, :, :5], v[:, :, :5]) for k, v in kv]
        torch.testing.assert_close(model(x[:, 5:], past_kv=prefix_kv), full[:, 5:], atol=1e-5, rtol=0)


def test_returned_kv_has_the_shape_of_the_new_tokens_only():
    model = random_model(True)
    _, kv = model(torch.zeros(3, 4, dtype=torch.long), return_kv=True)
    _, new = model(torch.zeros(3, 2, dtype=torch.long), past_kv=kv, return_kv=True)
    assert len(new) == model.cfg.n_layer
    assert all(k.shape == v.shape == (3, model.cfg.n_head, 2, 16) for k, v in new)


@LOCAL_PRIOR
def test_dual_cache_of_prefix_and_suffix_reproduces_the_middle_block(local_prior):
    """Fast-dLLM's dual cache: keys of prefix and suffix from a full pass, only the middle block recomputed."""
    model = random_model(False, local_prior=local_prior)
    x = torch.randint(0, 24, (2, 14), generator=torch.Generator().manual_seed(2))
    full, kv = model(x, return_kv=True)
    a, b = 4, 9  # the middle block x[:, a:b]
    dual = [(torch.cat([k[:, :, :a], k[:, :, b:]], 2), torch.cat([v[:, :, :a], v[:, :, b:]], 2)) for k, v in kv]
    pos = torch.arange(a, b).expand(2, -1)
    key_pos = torch.cat([torch.arange(a), torch.arange(b, 14), torch.arange(a, b)]).expand(2, -1)  # cached order
    middle = model(x[:, a:b], pos=pos, past_kv=dual, key_pos=key_pos)
    torch.testing.assert_close(middle, full[:, a:b], atol=1e-5, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
def test_left_padded_row_equals_the_row_alone(causal):
    model, pad = random_model(causal), 0
    row = torch.tensor([[5, 6, 7, 8, 9]])
    padded = torch.tensor([[pad, pad, pad, 5, 6, 7, 8, 9], [1, 2, 3, 4, 5, 6, 7, 8]])
    real = padded != pad
    pos = (real.cumsum(1) - 1).clamp_min(0)  # per-row positions: each row's first real token at 0
    alone = model(row)
    out = model(padded, pos=pos, key_padding_mask=real)
    assert not out.isnan().any()  # padding queries (no real key before them) stay finite
    torch.testing.assert_close(out[0, 3:], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], model(padded[1:])[0], atol=1e-5, rtol=0)
    if causal:  # ... and through the cache: padded prompt cached, then one token with the mask over all keys
        _, kv = model(padded[:, :-1], pos=pos[:, :-1], key_padding_mask=real[:, :-1], return_kv=True)
        last = model(padded[:, -1:], pos=pos[:, -1:], key_padding_mask=real, past_kv=kv)
        torch.testing.assert_close(last[0, 0], alone[0, -1], atol=1e-5, rtol=0)


def test_cache_arguments_leave_the_plain_forward_unchanged():
    model, x = random_model(True), torch.randint(0, 24, (2, 10), generator=torch.Generator().manual_seed(3))
    logits, _ = model(x, return_kv=True)
    torch.testing.assert_close(logits, model(x), atol=0, rtol=0)


# --- AR decoding ----------------------------------------------------------------------------------


class Counter(nn.Module):
    """A stub next-token model: after token t it predicts t + 1 (mod V), ids in `favour` scoring highest of all."""

    def __init__(self, vocab: int = 12, seq_len: int = 64, favour: tuple[int, ...] = ()):
        super().__init__()
        self.vocab, self.favour, self.cfg = vocab, list(favour), SimpleNamespace(seq_len=seq_len)

    def forward(self, idx, return_kv=False, **kwargs):
        logits = 5 * F.one_hot((idx + 1) % self.vocab, self.vocab).float()  # (B, T, V)
        logits[..., self.favour] = 50.0
        kv = [(torch.zeros(*idx.shape, 1)[:, None],) * 2]  # (B, 1, T, 1): one layer, one head
        return (logits, kv) if return_kv else logits


def reference_greedy(model: Transformer, prompt: torch.Tensor, n: int, query_is_target: bool) -> torch.Tensor:
    """Greedy decoding by full forward passes over the whole sequence (no cache, no window)."""
    x = prompt
    for _ in range(n):
        pos = torch.arange(x.shape[1])[None]
        logits = model(x, pos=pos, query_pos=pos + 1) if query_is_target else model(x)
        x = torch.cat([x, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return x


@LOCAL_PRIOR
@pytest.mark.parametrize("query_is_target", [False, True], ids=["ar", "ar_orderings"])
def test_kv_cache_decoding_equals_recomputing_the_context(query_is_target, local_prior):
    model, prompt = random_model(True, local_prior=local_prior), torch.tensor([[3, 4, 5], [7, 7, 9]])
    cached = sample_ar(model, prompt, 40, query_is_target=query_is_target)  # 43 tokens: the window slides
    fresh = sample_ar(model, prompt, 40, query_is_target=query_is_target, use_cache=False)
    assert torch.equal(cached.tokens, fresh.tokens) and cached.tokens.shape == (2, 43)
    assert cached.forward_passes == fresh.forward_passes == 40 and len(cached.history) == 40
    assert cached.history[0] == [[3], [3]] and cached.history[-1] == [[42], [42]]
    within = model.cfg.seq_len - (1 if query_is_target else 0)  # up to here the window is the whole sequence
    reference = reference_greedy(model, prompt, within - 3, query_is_target)
    assert torch.equal(cached.tokens[:, :within], reference)
    assert len(set(cached.tokens[0].tolist())) > 3  # a random model that does not just repeat one token


def test_a_prompt_longer_than_the_context_decodes_from_its_last_three_quarters():
    model = random_model(True)  # seq_len 16: a 20-token prompt keeps its last 12 tokens
    prompt = torch.randint(3, 24, (1, 20), generator=torch.Generator().manual_seed(4))
    long = sample_ar(model, prompt, 10).tokens
    assert torch.equal(long[:, 20:], sample_ar(model, prompt[:, 8:], 10).tokens[:, 12:])


@LOCAL_PRIOR
@pytest.mark.parametrize("use_cache", [True, False])
def test_batch_of_prompts_with_different_lengths_equals_each_alone(use_cache, local_prior):
    model, pad = random_model(True, local_prior=local_prior), 2
    prompts = [[5, 6], [9, 10, 11, 12, 13, 14]]
    x, real = left_pad(prompts, pad)
    assert x.tolist()[0] == [pad, pad, pad, pad, 5, 6] and real.sum(1).tolist() == [2, 6]
    seen = []  # RoPE is relative, so shifted positions would decode alike; check them directly
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["pos"]), with_kwargs=True)
    batch = sample_ar(model, x, 8, prompt_mask=real, use_cache=use_cache).tokens
    assert seen[0][:, -2:].tolist() == [[0, 1], [4, 5]]  # each row counts from its first real token
    assert seen[-1][:, -1].tolist() == [8, 12]
    for row, p in enumerate(prompts):
        alone = sample_ar(model, torch.tensor([p]), 8, use_cache=use_cache).tokens
        assert torch.equal(batch[row, 6 - len(p) :], alone[0])


def test_top_k_1_is_greedy_at_any_temperature():
    model, prompt = random_model(True), torch.tensor([[3, 4, 5], [1, 2, 3]])
    greedy = sample_ar(model, prompt, 10).tokens
    top1 = sample_ar(model, prompt, 10, temperature=1.5, top_k=1, generator=torch.Generator().manual_seed(0)).tokens
    assert torch.equal(top1, greedy)


def test_top_p_keeps_exactly_the_nucleus_of_the_tempered_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    nucleus = filter_logits(probs.log()[None], top_p=0.85).softmax(-1)[0]  # 0.5 + 0.3 < 0.85 <= 0.95
    torch.testing.assert_close(nucleus, torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95)
    assert filter_logits(probs.log()[None], top_p=0.01).isfinite().sum() == 1  # the top token always stays
    # sampled at T = 2: the tempered probabilities sqrt(p) / Σ sqrt(p) = .377, .292, .206, .119, .005 put
    # .669 < 0.7 before the third token, so the nucleus has three tokens (untempered it would have two)
    logits, n = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0001], dtype=torch.float64).log(), 30_000
    draws = next_token(logits.expand(n, -1), 2.0, top_p=0.7, generator=torch.Generator().manual_seed(0))
    tempered = (logits / 2).softmax(-1)
    kept = tempered.cumsum(-1) - tempered < 0.7  # tokens whose preceding mass is below top_p: the first three
    assert kept.tolist() == [True, True, True, False, False]
    observed = np.bincount(draws.numpy(), minlength=5)
    assert observed[~kept.numpy()].sum() == 0
    expected = (tempered * kept / (tempered * kept).sum()).numpy()[:3] * n
    assert chisquare(observed[:3], expected).pvalue > 1e-3


def test_eos_stops_each_sequence_and_the_loop():
    model, eod = Counter(vocab=12), 10
    out = sample_ar(model, torch.tensor([[5], [8]]), 20, eod_id=eod)
    assert out.tokens.tolist() == [[5, 6, 7, 8, 9, 10] + [10] * 15, [8, 9, 10] + [10] * 18]
    assert out.forward_passes == 5  # the loop ends when the last sequence emits eod


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_banned_ids_are_never_emitted(temperature):
    model, mask, pad = Counter(vocab=12, favour=(1, 2)), 1, 2  # the model wants mask and pad above all
    out = sample_ar(
        model, torch.tensor([[5]] * 4), 30, temperature, banned_ids=(mask, pad), generator=torch.Generator()
    )
    assert not torch.isin(out.tokens, torch.tensor([mask, pad])).any()
    assert sample_ar(model, torch.tensor([[5]]), 1).tokens[0, 1] in (mask, pad)  # unbanned, it would be


def test_bad_arguments_fail_with_one_line_naming_the_option():
    model = Counter()
    with pytest.raises(ConfigError, match="top_p"):
        sample_ar(model, torch.tensor([[5]]), 3, temperature=1.0, top_p=0.0)
    for mask in ([[True, False]], [[True, False, True]]):  # right padding, padding inside the prompt
        with pytest.raises(ConfigError, match="prompt_mask: .*on the left"):
            sample_ar(model, torch.tensor([[5] * len(mask[0])]), 3, prompt_mask=torch.tensor(mask))


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_mdm_caches_are_exact_with_the_local_prior_when_each_block_is_one_step(cache):
    """One step per block: the cache is refreshed before it is read, so tokens equal the uncached decoding."""
    from unmask.sampling import SamplerConfig, sample_mdm

    model = random_model(False, local_prior=5.0)
    x, real = left_pad([[5, 6], [9, 10, 11, 12]], 2)
    options = dict(method="low_confidence", steps=2, block_length=4)
    cached = sample_mdm(model, x, 8, 1, SamplerConfig.from_flat(cache=cache, **options), (2,), prompt_mask=real)
    plain = sample_mdm(model, x, 8, 1, SamplerConfig.from_flat(**options), (2,), prompt_mask=real)
    assert torch.equal(cached.tokens, plain.tokens)

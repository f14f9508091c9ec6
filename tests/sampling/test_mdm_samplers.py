"""MDM samplers: exact token law, schedules, frozen tokens, blocks, caches, conv, EDLM, CFG, infilling."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch import nn

from unmask.config import ConfigError, ModelConfig
from unmask.model import Transformer, select_positions
from unmask.sampling import SamplerConfig, sample_mdm
from unmask.sampling.mdm import ar_log_likelihood, commit_schedule, conv_scores, edlm_resample

MASK = 1
METHODS = ["ancestral", "low_confidence", "random", "threshold"]


class FixedLogits(nn.Module):
    """A stub denoiser whose logits are a fixed table (T, V) whatever the input: the law of a sample is known."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table
        self.cfg = SimpleNamespace(seq_len=table.shape[0], causal=False)
        self.calls = 0

    def forward(self, idx, output_mask=None, **kwargs):
        self.calls += 1
        logits = self.table[: idx.shape[1]].expand(len(idx), -1, -1)  # (B, T, V)
        return logits if output_mask is None else select_positions(logits, output_mask)


class Recorder(nn.Module):
    """A random bidirectional Transformer that records every input (and its keyword arguments)."""

    def __init__(self, vocab: int = 24, seq_len: int = 24, causal: bool = False, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.model = Transformer(ModelConfig(size="tiny", vocab_size=vocab, seq_len=seq_len, causal=causal)).eval()
        with torch.no_grad():  # sharper predictions than the 0.02 init, so confidences differ
            for p in self.model.parameters():
                if p.dim() == 2:
                    p.mul_(10)
        self.cfg = self.model.cfg
        self.inputs: list[torch.Tensor] = []

    def forward(self, idx, **kwargs):
        self.inputs.append(idx.clone())
        return self.model(idx, **kwargs)


def run(model, prompt, gen_len, seed=0, energy=None, **options):
    g = torch.Generator().manual_seed(seed)
    return sample_mdm(model, prompt, gen_len, MASK, SamplerConfig.from_flat(**options), (0,), g, energy)


def prompts(B: int = 2, P: int = 3) -> torch.Tensor:
    return torch.arange(5, 5 + B * P).view(B, P) % 20 + 2


# --- the law of one token --------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("temperature", [0.6, 1.0])
def test_single_token_samples_follow_softmax_of_logits_over_temperature(method, temperature):
    V, n = 8, 20_000
    table = torch.tensor([[0.0] * V, [2.0, 5.0, 1.5, 1.0, 0.0, -1.0, 0.5, -2.0]])  # mask id 1 is the likeliest
    out = run(FixedLogits(table), torch.full((n, 1), 3), 1, method=method, temperature=temperature)
    observed = np.bincount(out.tokens[:, 1].numpy(), minlength=V)
    allowed = torch.ones(V, dtype=torch.bool)
    allowed[[0, MASK]] = False  # banned and mask token: never emitted
    assert observed[~allowed.numpy()].sum() == 0
    expected = torch.softmax(table[1][allowed].double() / temperature, -1).numpy() * n
    assert chisquare(observed[allowed.numpy()], expected).pvalue > 1e-3


@pytest.mark.parametrize("temperature", [0.6, 1.0])
def test_low_confidence_commits_the_position_and_token_of_the_exact_law(temperature):
    # Two masked positions, one committed per step: the first step keeps the position whose drawn
    # token is the more probable (prob confidence, at temperature 1), so which position and which
    # token come first depend on both draws. Exact law: P(position i, token v) =
    # q_i(v) · P(p_j(x_j) < p_i(v)), x_j ~ q_j, with q = softmax(l / temperature), p = softmax(l).
    V, n = 6, 30_000
    table = torch.tensor(
        [[0.0] * V, [-9.0, -9.0, 2.0, 1.2, 0.1, -0.7], [-9.0, -9.0, 1.6, 1.5, -0.3, 0.4]]
    )  # banned 0 and mask 1 never drawn; no two probabilities of the two rows are equal
    out = run(FixedLogits(table), torch.full((n, 1), 3), 2, method="low_confidence", steps=2, temperature=temperature)
    first = torch.tensor([rows[0] for rows in out.history[0]])  # (n,) position committed first: 1 or 2
    token = out.tokens[torch.arange(n), first]
    observed = np.bincount(((first - 1) * V + token).numpy(), minlength=2 * V)
    allowed = torch.arange(2, V)
    p = torch.softmax(table[1:, allowed].double(), -1)  # (2, 4) confidences
    q = torch.softmax(table[1:, allowed].double() / temperature, -1)  # (2, 4) the drawn law
    expected = np.zeros(2 * V)
    for i in range(2):
        for v in range(len(allowed)):
            below = q[1 - i][p[1 - i] < p[i, v]].sum()  # the other position draws a less probable token
            expected[i * V + int(allowed[v])] = float(q[i, v] * below) * n
    assert abs(expected.sum() - n) < 1e-6 * n
    keep = expected > 0
    assert observed[~keep].sum() == 0
    assert chisquare(observed[keep], expected[keep]).pvalue > 1e-3


def test_every_draw_uses_float64_noise(monkeypatch):
    dtypes = []
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: dtypes.append(k.get("dtype")) or real_rand(*a, **k))
    for method in METHODS:
        run(Recorder(), prompts(), 6, method=method, temperature=1.0, conv=True)
    assert dtypes and set(dtypes) == {torch.float64}


def test_temperature_zero_is_argmax_and_skips_the_mask_token():
    table = torch.tensor([[0.0] * 6, [0.0, 9.0, 1.0, 3.0, 2.0, 0.5]])
    out = run(FixedLogits(table), torch.full((4, 1), 2), 1, temperature=0.0)
    assert (out.tokens[:, 1] == 3).all()


# --- schedules, frozen tokens, blocks ----------------------------------------------------------------


def committed_states(model: Recorder, out) -> list[torch.Tensor]:
    return model.inputs + [out.tokens]


@pytest.mark.parametrize(
    "options",
    [
        dict(method="low_confidence", steps=4),
        dict(method="low_confidence", steps=4, confidence="margin", temperature=1.0),
        dict(method="low_confidence", steps=6, confidence="entropy", block_length=4),
        dict(method="random", steps=5, temperature=1.0),
        dict(method="low_confidence", steps=4, conv=True, conv_kernel=3),
    ],
)
def test_exactly_the_scheduled_count_is_committed_and_committed_tokens_never_change(options):
    model, prompt, gen_len = Recorder(), prompts(), 12
    out = run(model, prompt, gen_len, **options)
    n_blocks = gen_len // options.get("block_length", gen_len)
    schedule = commit_schedule(gen_len // n_blocks, options["steps"] // n_blocks) * n_blocks
    states = committed_states(model, out)
    assert len(states) == len(schedule) + 1 == len(out.history) + 1 and out.forward_passes == len(schedule)
    for step, k in enumerate(schedule):
        before, after = states[step], states[step + 1]
        newly = (before == MASK) & (after != MASK)
        assert (newly.sum(1) == k).all()
        assert [sorted(r) for r in out.history[step]] == [row.nonzero().flatten().tolist() for row in newly]
        kept = before != MASK
        assert torch.equal(after[kept], before[kept])
    assert (out.tokens != MASK).all() and torch.equal(out.tokens[:, :3], prompt)


@pytest.mark.parametrize("method", ["low_confidence", "threshold", "ancestral"])
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_blocks_are_decoded_left_to_right_and_never_leak(method, cache):
    P, gen_len, block = 3, 12, 4
    out = run(Recorder(), prompts(P=P), gen_len, method=method, block_length=block, cache=cache, threshold=0.5)
    block_of = lambda pos: (pos - P) // block  # noqa: E731
    seen_blocks = []
    for step in out.history:
        blocks = {block_of(p) for row in step for p in row}
        assert len(blocks) <= 1  # one step never commits into two blocks
        seen_blocks += sorted(blocks)
    assert seen_blocks == sorted(seen_blocks) and set(seen_blocks) == {0, 1, 2}
    assert (out.tokens != MASK).all()


def test_threshold_one_is_one_token_per_step_low_confidence():
    for temperature in (0.0, 1.0):
        for block_length in (None, 4):
            a = run(Recorder(), prompts(), 8, temperature=temperature, method="threshold", threshold=1.0,
                    block_length=block_length)  # fmt: skip
            b = run(Recorder(), prompts(), 8, temperature=temperature, method="low_confidence", steps=8,
                    block_length=block_length)  # fmt: skip
            assert torch.equal(a.tokens, b.tokens) and a.history == b.history
            assert all(len(r) == 1 for step in a.history for r in step)


def test_threshold_commits_every_confident_token_at_once():
    table = torch.zeros(6, 8)
    table[3:, 4] = 20.0  # positions 3..5 near-certain
    out = run(FixedLogits(table), torch.full((2, 3), 2), 3, method="threshold", threshold=0.9)
    assert len(out.history) == 1 and out.history[0] == [[3, 4, 5]] * 2 and out.forward_passes == 1


@pytest.mark.parametrize("options", [dict(method=m) for m in METHODS] + [dict(cache="dual", block_length=3),
                                     dict(cfg_scale=1.5), dict(conv=True, method="ancestral")])  # fmt: skip
def test_infilled_sequences_keep_every_given_token(options):
    model = Recorder()
    prompt = torch.tensor([[4, MASK, MASK, 7, 8, MASK, 9], [MASK, 5, 6, MASK, MASK, MASK, 3]])
    out = run(model, prompt, 3, temperature=1.0, **options)
    fixed = prompt != MASK
    for state in committed_states(model, out):
        state = state[: len(prompt)]  # CFG's second half is the unconditional copy
        assert torch.equal(state[:, : prompt.shape[1]][fixed], prompt[fixed])
    assert (out.tokens != MASK).all()


# --- caches -----------------------------------------------------------------------------------------


def test_no_change_cache_of_the_ancestral_sampler_only_saves_forward_passes():
    kw = dict(method="ancestral", steps=40, temperature=1.0)
    a = run(Recorder(), prompts(), 8, skip_unchanged=True, **kw)
    b = run(Recorder(), prompts(), 8, skip_unchanged=False, **kw)
    assert torch.equal(a.tokens, b.tokens) and a.history == b.history
    steps_with_a_commit = sum(any(row for row in step) for step in a.history)
    assert b.forward_passes == 40 and a.forward_passes <= steps_with_a_commit + 1 < 40


def test_fast_dllm_caches_recompute_only_the_window_after_a_blocks_first_step():
    P, gen_len, block = 3, 12, 4
    for cache, width in (("prefix", lambda lo: P + gen_len - lo), ("dual", lambda lo: block)):
        model = Recorder()
        out = run(model, prompts(P=P), gen_len, method="low_confidence", steps=6, block_length=block, cache=cache)
        widths = [x.shape[1] for x in model.inputs]
        expected = [w for lo in (3, 7, 11) for w in (P + gen_len, width(lo))]
        assert widths == expected and out.forward_passes == 6


def test_dual_cache_with_one_step_per_block_is_exact():
    """Each block decoded in its first (full) pass: the approximate cache is never read, tokens are identical."""
    a = run(Recorder(), prompts(), 8, steps=2, block_length=4, cache="dual")
    b = run(Recorder(), prompts(), 8, steps=2, block_length=4, cache="none")
    assert torch.equal(a.tokens, b.tokens)


# --- convolutional decoding ---------------------------------------------------------------------------


def test_conv_scores_count_unmasked_neighbours_in_the_window():
    unmasked = torch.tensor([[1, 1, 0, 0, 0, 0, 1, 0]], dtype=torch.bool)
    u = torch.tensor([[2, 2, 1, 0, 0, 1, 1, 1]], dtype=torch.float64)  # kernel 3: self and one each side
    torch.testing.assert_close(conv_scores(unmasked, 3, "tanh", 0.5), torch.tanh(0.5 * u))
    torch.testing.assert_close(conv_scores(unmasked, 3, "linear", 2.0), 2.0 * u / 3)
    assert (conv_scores(unmasked, 3, "none", 2.0) == 1).all()


def test_conv_decoding_grows_outward_from_committed_text():
    P, K = 2, 3
    out = run(Recorder(seq_len=30), prompts(P=P), 20, steps=20, conv=True, conv_kernel=K, conv_scale=20.0)
    committed = torch.zeros(2, P + 20, dtype=torch.bool)
    committed[:, :P] = True
    for step in out.history:
        for b, (pos,) in enumerate(step):
            assert committed[b, max(pos - K // 2, 0) : pos + K // 2 + 1].any()  # a committed neighbour
            committed[b, pos] = True


def test_conv_ancestral_fills_positions_without_neighbours_in_a_final_step():
    out = run(Recorder(seq_len=40), prompts(P=1), 30, method="ancestral", steps=3, conv=True, conv_kernel=3)
    # 3 steps can only grow a few tokens out of the prompt; the 4th step fills the rest
    assert (out.tokens != MASK).all() and len(out.history) == 4 and len(out.history[-1][0]) > 20


# --- EDLM -----------------------------------------------------------------------------------------


def test_edlm_weights_use_minus_the_energy_per_sequence():
    cands = torch.arange(2 * 3 * 4).view(2, 3, 4)
    log_q = torch.zeros(2, 3, dtype=torch.float64)
    log_p_ar = torch.tensor([[-50.0, 0.0, -50.0], [0.0, -50.0, -50.0]], dtype=torch.float64)
    chosen, w = edlm_resample(cands, log_q, log_p_ar, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(chosen, torch.stack([cands[0, 1], cands[1, 0]]))  # the AR-likely candidate of each row
    torch.testing.assert_close(w, torch.softmax(log_p_ar - log_q, 1))  # p_AR / q, not q / p_AR
    # equal AR likelihood: the candidate the proposal over-samples is down-weighted
    _, w = edlm_resample(cands, torch.tensor([[-1.0, -3.0, -3.0]] * 2).double(), torch.zeros(2, 3).double(), 1.0)
    assert w[0, 0] < w[0, 1]


class CopyPromptAR(nn.Module):
    """A causal stub: the next token is the previous one with probability ~1 (log-probabilities, not probs)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.cfg = SimpleNamespace(seq_len=64, causal=True)

    def forward(self, idx, **kwargs):
        return 30.0 * nn.functional.one_hot(idx, self.vocab).float()  # (B, T, V)


def test_ar_log_likelihood_sums_next_token_log_probs():
    model = Recorder(causal=True)
    x = torch.randint(2, 24, (3, 7), generator=torch.Generator().manual_seed(0))
    logp = model(x[:, :-1]).double().log_softmax(-1)
    expected = sum(logp[:, i, x[:, i + 1]].diagonal() for i in range(6))
    torch.testing.assert_close(ar_log_likelihood(model, x), expected)


def test_edlm_resamples_each_sequence_from_its_own_candidates():
    """Uniform denoiser over tokens 4..7, an AR energy that wants copies of the prompt: each row copies its own."""
    V = 8
    table = torch.full((4, V), -1e9)
    table[:, 4:] = 0.0
    prompt = torch.tensor([[4], [6], [7]])
    options = dict(method="ancestral", steps=1, temperature=1.0, edlm_candidates=32, edlm_t_end=0.0)
    out = run(FixedLogits(table), prompt, 1, energy=CopyPromptAR(V), **options)
    assert torch.equal(out.tokens[:, 1], prompt[:, 0]) and out.energy_passes == 1
    plain = run(FixedLogits(table), prompt, 1, method="ancestral", steps=1, temperature=1.0)
    assert not torch.equal(plain.tokens[:, 1], prompt[:, 0])


# --- guidance, errors -------------------------------------------------------------------------------


class PromptSensitive(nn.Module):
    """Logits a when the prompt is visible, b when it is masked (CFG's unconditional pass)."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = torch.tensor(a), torch.tensor(b)
        self.cfg = SimpleNamespace(seq_len=8, causal=False)

    def forward(self, idx, output_mask=None, **kwargs):
        rows = torch.where((idx[:, :1] == MASK)[..., None], self.b, self.a).expand(-1, idx.shape[1], -1)
        return rows if output_mask is None else select_positions(rows, output_mask)


def test_unsupervised_cfg_extrapolates_away_from_the_unconditional_logits():
    model = PromptSensitive([0.0, 0.0, 3.0, 2.5], [0.0, 0.0, 3.0, 0.0])  # cond prefers 2 only slightly
    prompt = torch.tensor([[2]])
    assert run(model, prompt, 1).tokens[0, 1] == 2
    assert run(model, prompt, 1, cfg_scale=0.0).forward_passes == 1
    guided = run(model, prompt, 1, cfg_scale=1.0)  # u + 2(c - u) = [.., 3, 5]
    assert guided.tokens[0, 1] == 3 and guided.forward_passes == 2


@pytest.mark.parametrize(
    "options, gen_len, match",
    [
        (dict(block_length=5), 12, "block_length=5 must divide"),
        (dict(block_length=4, steps=5), 12, "steps=5 must be a multiple"),
        (dict(method="threshold", steps=4), 12, "steps: not used by method threshold"),
        (dict(cfg_scale=1.0, cache="dual"), 12, "cfg_scale=1.0 with cache=dual"),
        (dict(conv=True, conv_kernel=4), 12, "conv_kernel=4"),
        (dict(), 40, "exceeds the model's seq_len"),
    ],
)
def test_bad_combinations_fail_with_one_line(options, gen_len, match):
    with pytest.raises(ConfigError, match=match):
        run(Recorder(), prompts(), gen_len, **options)


def test_edlm_needs_the_ancestral_sampler():
    with pytest.raises(ConfigError, match="needs method ancestral"):
        run(Recorder(), prompts(), 4, energy=CopyPromptAR(24), temperature=1.0)


# --- prompts of different lengths in one batch -----------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        dict(method="low_confidence", steps=8),
        dict(method="low_confidence", steps=4, confidence="margin", conv=True, conv_kernel=5),
        dict(method="threshold", threshold=0.5, block_length=4, cache="prefix"),
        dict(method="threshold", threshold=0.5, block_length=4, cache="dual"),
        dict(method="low_confidence", steps=8, cfg_scale=1.0),
    ],
    ids=["low_confidence", "conv_margin", "threshold_prefix", "threshold_dual", "cfg"],
)
def test_a_batch_of_prompts_of_different_lengths_decodes_each_as_alone(options):
    """Left padding is never attended to and each row keeps its own positions (temperature 0)."""
    from unmask.sampling import left_pad

    model, gen_len = Recorder(), 8
    rows = [[5, 9], [7, 3, 11, 4, 6]]
    alone = [run(model, torch.tensor([r]), gen_len, **options).tokens[0, len(r) :] for r in rows]
    padded, prompt_mask = left_pad(rows, pad_id=0)
    g = torch.Generator().manual_seed(0)
    out = sample_mdm(model, padded, gen_len, MASK, SamplerConfig.from_flat(**options), (0,), g, prompt_mask=prompt_mask)
    for row, expected in enumerate(alone):
        assert out.tokens[row, padded.shape[1] :].tolist() == expected.tolist(), row
    assert out.tokens[0, :3].tolist() == [0, 0, 0]  # the padding itself is never rewritten

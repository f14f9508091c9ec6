"""Masked-diffusion decoding: every MDM sampler (docs/sampling.md) as one loop over blocks and steps.

The canvas is the prompt followed by `gen_len` mask tokens; mask tokens inside the prompt are
infilled, every other prompt token stays fixed. Blocks (semi-AR) split the appended generation,
decoded left to right (infill masks inside the prompt belong to the first block). At each step the
model predicts the masked positions of the current block, a token x0 is drawn for each
(float64 Gumbel-max), and a method decides which predictions are committed:

  ancestral       (MDLM) each masked token unmasks with probability (t - s) / t, t = 1 - i/S
  low_confidence  (LLaDA) the k_i most confident, k_i from `commit_schedule`
  random          k_i random positions
  threshold       (Fast-dLLM) every prediction with confidence > τ, at least the most confident

Committed tokens never change. Options that combine with the methods: conv (2509.15188) scales
the scores by g(c·u_i), u_i = committed tokens near i; EDLM replaces the ancestral x0 by one of k
candidates resampled with weights softmax(-E/τ) from an energy (an AR run, or an NCE-trained energy
run); unsupervised CFG; the Fast-dLLM prefix / dual KV cache; MDLM's no-change cache.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from unmask.config import check
from unmask.objectives.ar import ar_token_nll, left_to_right
from unmask.objectives.mdm import guided_logits
from unmask.sampling.base import SampleOutput, filter_logits
from unmask.sampling.config import SamplerConfig
from unmask.sampling.gumbel import confidence, sample_categorical, sample_with_confidence


def commit_schedule(n_masked: int, steps: int) -> list[int]:
    """Tokens committed at each step: ~M/S each, the remainder to the first steps."""
    base, extra = divmod(n_masked, steps)
    return [base + (1 if s < extra else 0) for s in range(steps)]


def confidence_of(logits: torch.Tensor, x0: torch.Tensor | None, rule: str) -> torch.Tensor:
    """Positive confidence (M,) of predictions x0 (M,) under logits (M, V) at temperature 1.

    prob: p(x0); margin: p(top-1) - p(top-2); entropy: exp(-H(p)), which orders like -H but stays
    positive, so conv can scale it and a threshold τ in (0, 1] applies to every rule.
    """
    p = logits.double().softmax(-1)
    if rule == "prob":
        return p.gather(-1, x0[:, None]).squeeze(-1)
    if rule == "margin":
        top2 = p.topk(2, dim=-1).values
        return top2[:, 0] - top2[:, 1]
    entropy = -(p * p.clamp_min(1e-300).log()).sum(-1)
    return torch.exp(-entropy)


def _top_k_commit(score: torch.Tensor, cand: torch.Tensor, k: torch.Tensor, kmax: int) -> torch.Tensor:
    """(B, T) the k (B,) best-scored masked positions of each sequence."""
    if not kmax:
        return torch.zeros_like(cand)
    ranked = score.topk(kmax, dim=1).indices
    return torch.zeros_like(cand).scatter(1, ranked, torch.arange(kmax, device=cand.device) < k[:, None]) & cand


def _threshold_commit(score: torch.Tensor, cand: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, T) every masked position scored above τ, and at least the best of each sequence that has one."""
    commit = cand & (score > threshold)
    best = score.argmax(1)
    commit[torch.arange(len(cand), device=cand.device), best] |= cand.any(1)
    return commit


def _commit(score: torch.Tensor, cand: torch.Tensor, threshold: float, k: torch.Tensor | None, kmax: int):
    """The threshold rule when k is None, else each sequence's k best."""
    return _threshold_commit(score, cand, threshold) if k is None else _top_k_commit(score, cand, k, kmax)


def _prob_scores(logits, cand, scale, cfg: SamplerConfig, k, kmax, generator):
    """Prob confidence: x0 and scores (B, T) at every masked position, and the commit, as float64 would make it.

    The draws and p(x0) come from `sample_with_confidence` (one float32 pass, float64 uniforms);
    a sequence whose commit the float32 error could change (a score within its bound of the k-th
    best, of τ or of the best) gets float64 confidences, as every sequence had before.
    """
    B, T = cand.shape
    tokens, conf, err = sample_with_confidence(logits, cfg.temperature, generator)
    x0 = torch.zeros_like(cand, dtype=torch.long).masked_scatter(cand, tokens)
    if scale is not None:  # conv scales are >= 0
        conf = conf * scale[cand]
    score = torch.full((B, T), float("-inf"), dtype=torch.float64, device=cand.device).masked_scatter(cand, conf)
    commit = _commit(score, cand, cfg.commit.threshold, k, kmax)
    if err is None:  # float64 confidences already
        return x0, commit
    if scale is not None:
        err = err * scale[cand]
    bound = torch.zeros_like(score).masked_scatter(cand, err)
    lo, hi = score - bound, score + bound
    if k is None:  # threshold: which scores exceed τ, and which is the best
        top2 = score.topk(min(2, T), dim=1).indices
        rows = torch.arange(B, device=cand.device)
        clear_best = (lo[rows, top2[:, 0]] > hi[rows, top2[:, -1]]) | (cand.sum(1) < 2)
        unsure = ~clear_best | (cand & (lo <= cfg.commit.threshold) & (hi > cfg.commit.threshold)).any(1)
    else:  # top-k: the k chosen stay above every other score
        floor = torch.where(commit, lo, float("inf")).amin(1)
        unsure = floor <= torch.where(cand & ~commit, hi, float("-inf")).amax(1)
    redo = cand & unsure[:, None]  # (B, T)
    if bool(redo.any()):  # host sync; float64 confidences of the unsure sequences
        exact = confidence(logits[redo[cand]], x0[redo])
        score[redo] = exact if scale is None else exact * scale[redo]
        commit = _commit(score, cand, cfg.commit.threshold, k, kmax)
    return x0, commit


def conv_scores(unmasked: torch.Tensor, kernel: int, g: str, scale: float) -> torch.Tensor:
    """s_i = g(c·u_i) (B, T), u_i = unmasked positions (prompt included) in the centred window of size K."""
    if g == "none":
        return torch.ones(unmasked.shape, dtype=torch.float64, device=unmasked.device)
    ones = torch.ones(1, 1, kernel, dtype=torch.float64, device=unmasked.device)
    u = F.conv1d(unmasked.double()[:, None], ones, padding=kernel // 2)[:, 0]  # (B, T)
    return torch.tanh(scale * u) if g == "tanh" else scale * u / kernel


@torch.no_grad()
def ar_log_likelihood(model: torch.nn.Module, x: torch.Tensor, query_is_target: bool = False) -> torch.Tensor:
    """log p_AR(x) (B,) in float64: the sum of next-token log-probabilities of x[:, 1:]."""
    nll, _ = ar_token_nll(model, x, dtype=torch.float64, **left_to_right(x, query_is_target))  # (B, T-1)
    return -nll.sum(-1)


def edlm_resample(
    candidates: torch.Tensor,
    log_q: torch.Tensor,
    log_p_ar: torch.Tensor,
    temperature: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One candidate per sequence, drawn with importance weights (EDLM, Xu et al. 2024), for an AR energy.

    candidates (B, k, T) drawn from the proposal q = p_θ(x0 | x_t); log_q, log_p_ar (B, k) their
    log-probabilities under q and under the AR model. Energy E = -log p_AR(x0) + log q(x0): the
    target is p_AR, so the weight p_AR / q = exp(-E). Returns (chosen (B, T), weights (B, k)).
    """
    return resample_by_energy(candidates, -log_p_ar + log_q, temperature, generator)


def resample_by_energy(
    candidates: torch.Tensor, energy: torch.Tensor, temperature: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One of each sequence's k candidates (B, k, T), drawn with weights softmax(-E / τ) over its own energies
    E (B, k) (dim 1, never across the batch); lower energy = more likely. Returns (chosen (B, T), weights (B, k))."""
    weights = torch.softmax(-energy.double() / temperature, dim=1)
    pick = torch.multinomial(weights, 1, generator=generator).squeeze(1)  # (B,)
    return candidates[torch.arange(len(candidates), device=candidates.device), pick], weights


def candidate_energies(
    energy_model: torch.nn.Module, candidates: torch.Tensor, masked: torch.Tensor, log_q: torch.Tensor
) -> torch.Tensor:
    """E (B, k) float64 of candidates (B, k, T) drawn at the positions `masked` (B, T) of x_t, log_q (B, k) their
    log-probability under the proposal.

    An energy run (cfg.energy_head, trained by NCE against the denoiser's own samples): its E(x0, x_t) is the
    residual energy already, target ∝ q · exp(-E), so the weight is exp(-E). An AR run: E = -log p_AR + log q
    (target p_AR, weight p_AR / q). Candidate j of sequence b is row b*k + j of the flattened batch."""
    B, k, T = candidates.shape
    flat = candidates.reshape(B * k, T)
    if getattr(energy_model.cfg, "energy_head", False):
        rows_masked = masked.repeat_interleave(k, dim=0)  # (B*k, T): row b*k + j has sequence b's x_t
        return energy_model(flat, energy_mask=rows_masked).double().view(B, k)
    return -ar_log_likelihood(energy_model, flat).view(B, k) + log_q


class _Denoiser:
    """Logits at the candidate positions: CFG, the Fast-dLLM cache, banned tokens, top-k/top-p; counts passes."""

    def __init__(self, model, cfg: SamplerConfig, mask_id: int, banned: list[int], fixed: torch.Tensor, out, real):
        self.model, self.cfg, self.mask_id, self.fixed, self.out = model, cfg, mask_id, fixed, out
        self.banned = torch.tensor(banned, dtype=torch.long, device=fixed.device)
        self.past: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.window = (0, fixed.shape[1])
        # Left-padded prompts of different lengths: padding is never attended to, and each row's
        # tokens keep the positions they would have alone.
        self.real = real  # (B, T) True for every non-padding position, or None
        self.pos = None if real is None else (real.long().cumsum(1) - 1).clamp_min(0)

    def _kw(self, a: int = 0, b: int | None = None) -> dict:
        if self.real is None:
            return {}
        real, pos = self.real, self.pos
        if b is None:
            return {"pos": pos, "key_padding_mask": real}
        return {"pos": pos[:, a:b], "key_padding_mask": torch.cat([real[:, :a], real[:, b:], real[:, a:b]], 1)}

    def new_block(self, start: int, end: int) -> None:
        """Drop the cache; the next call is a full pass that refreshes it for the window [start, end)."""
        self.past, self.window = None, (start, end if self.cfg.cache.kv == "dual" else self.fixed.shape[1])

    def __call__(self, x: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """(M, V) float32 logits at the M positions of cand (B, T), row-major."""
        self.out.forward_passes += 1
        if self.cfg.cfg_scale > 0:
            uncond = x.masked_fill(self.fixed, self.mask_id)  # the prompt (every fixed token) replaced by masks
            logits = guided_logits(self.model, x, uncond, cand, self.cfg.cfg_scale, **self._kw())
            self.out.forward_passes += 1
        elif self.cfg.cache.kv == "none":
            logits = self.model(x, output_mask=cand, **self._kw()).float()
        elif self.past is None:  # a block's first step: full pass, keep the keys outside the window
            logits, kv = self.model(x, output_mask=cand, return_kv=True, **self._kw())
            (a, b), logits = self.window, logits.float()
            self.past = [
                (torch.cat([k[:, :, :a], k[:, :, b:]], 2), torch.cat([v[:, :, :a], v[:, :, b:]], 2)) for k, v in kv
            ]  # (B, H, T - (b - a), Dh) per layer
        else:  # only the window is recomputed; its queries attend to the cached keys outside it
            a, b = self.window
            kw = self._kw(a, b) or {"pos": torch.arange(a, b, device=x.device).expand(len(x), -1)}
            every = self.pos if self.pos is not None else torch.arange(x.shape[1], device=x.device).expand(len(x), -1)
            key_pos = torch.cat([every[:, :a], every[:, b:], every[:, a:b]], 1)  # the cached keys' order
            logits = self.model(x[:, a:b], output_mask=cand[:, a:b], past_kv=self.past, key_pos=key_pos, **kw).float()
        logits[:, self.banned] = float("-inf")  # the mask token is never emitted
        T = self.cfg.temperature
        if (self.cfg.top_k or self.cfg.top_p < 1) and T > 0:  # the nucleus of the tempered law, the one sampled
            logits = filter_logits(logits / T, self.cfg.top_k, self.cfg.top_p) * T
        return logits


def _rows(commit: torch.Tensor) -> list[list[int]]:
    """The committed positions of each sequence of commit (B, T), with one host sync."""
    rows: list[list[int]] = [[] for _ in range(len(commit))]
    for b, pos in commit.nonzero().tolist():
        rows[b].append(pos)
    return rows


@torch.no_grad()
def sample_mdm(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    gen_len: int,
    mask_id: int,
    config: SamplerConfig,
    banned_ids: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
    energy_model: torch.nn.Module | None = None,
    prompt_mask: torch.Tensor | None = None,
    on_step: Callable[[list[list[int]], torch.Tensor], None] | None = None,
) -> SampleOutput:
    """Generate gen_len tokens after prompts (B, P) (mask tokens inside them are infilled) with `config`.

    energy_model: an AR model or an energy model (cfg.energy_head) over the same tokenizer; turns the
        ancestral sampler into EDLM.
    prompt_mask: (B, P) True for real prompt tokens, for prompts of different lengths left-padded
        with any non-mask id (`unmask.sampling.left_pad`); each row decodes as it would alone.
    on_step: called after every step with, per sequence, the positions committed at that step and
        the canvas (B, T) after it (`unmask serve` streams them); it may raise to stop decoding.
    """
    cfg = config
    if energy_model is not None:
        cfg.check_energy()
        check(prompt_mask is None, "EDLM (an energy run) needs prompts of one length; pass them in separate batches")
    B, P = prompt.shape
    T = P + gen_len
    limit = model.cfg.seq_len
    check(T <= limit, f"prompt ({P} tokens) + length {gen_len} exceeds the model's seq_len {limit}; shorten either")
    vocab = getattr(model.cfg, "vocab_size", 1)  # (a stand-in model in tests may not say)
    cfg.check_fits(limit, vocab, B, T, energy_model is not None)  # before anything is allocated
    x = torch.cat([prompt, torch.full((B, gen_len), mask_id, dtype=prompt.dtype, device=prompt.device)], dim=1)
    fixed = x != mask_id  # (B, T) never altered
    real = None
    if prompt_mask is not None:
        check(prompt_mask.shape == prompt.shape, f"prompt_mask {tuple(prompt_mask.shape)} != prompt {(B, P)}")
        real = torch.cat([prompt_mask.to(x.device), torch.ones_like(x[:, P:], dtype=torch.bool)], dim=1)
    out = SampleOutput(tokens=x)
    if fixed.all():
        return out
    n_blocks, steps_per_block = cfg.blocks(gen_len, int((~fixed).sum(1).max()))
    denoise = _Denoiser(model, cfg, mask_id, sorted({mask_id, *banned_ids}), fixed, out, real)
    block_len = gen_len // n_blocks if gen_len else 0
    col = torch.arange(T, device=x.device)
    for block in range(n_blocks):
        lo, hi = (P + block * block_len, P + (block + 1) * block_len) if gen_len else (0, T)
        region = (col >= lo) & (col < hi) if block else col < hi  # (T,): infill masks join the first block
        first_masked = int((~fixed).any(0).nonzero()[0]) if block == 0 else lo
        denoise.new_block(first_masked, hi)
        x = _decode_block(x, region, steps_per_block, denoise, cfg, mask_id, generator, energy_model, out, on_step)
    if (x == mask_id).any():  # conv can leave a position with no committed neighbour masked: one fill step
        cand = x == mask_id
        denoise.new_block(0, T)
        x0 = sample_categorical(denoise(x, cand), cfg.temperature, generator)
        x = x.masked_scatter(cand, x0)
        out.history.append(_rows(cand))
        if on_step is not None:
            on_step(out.history[-1], x)
    out.tokens = x
    return out


def _decode_block(x, region, steps, denoise, cfg, mask_id, generator, energy_model, out, on_step=None) -> torch.Tensor:
    """Decode the masked positions of `region` (T,) in `steps` steps (threshold: until none is left).

    Tokens are drawn only where they matter: at the committed positions, or, for the prob confidence
    (which scores the token drawn), at every masked position by one float32 pass (`_prob_scores`).
    """
    B, T = x.shape
    method = cfg.commit.method
    n = ((x == mask_id) & region).sum(1)  # (B,) masked tokens of this block per sequence
    if method != "threshold":  # tokens committed per step and sequence: the schedule of commit_schedule
        at = torch.arange(steps, device=x.device)[:, None]
        schedule = n // steps + (at < n % steps).long()  # (steps, B)
        kmaxes = schedule.amax(1).tolist()  # host sync, once per block
    step, logits, changed = 0, None, True
    while True:
        cand = (x == mask_id) & region  # (B, T)
        if (step == steps) if method != "threshold" else not bool(cand.any()):  # host sync per step
            break
        if changed or logits is None or not cfg.cache.skip_unchanged:
            logits = denoise(x, cand)  # (M, V)
        scale = None
        if cfg.conv.enabled:
            committed = x != mask_id if denoise.real is None else (x != mask_id) & denoise.real  # padding: no text
            scale = conv_scores(committed, cfg.conv.kernel, cfg.conv.g, cfg.conv.scale)
        x0 = None  # (B, T) drawn tokens where known; else drawn below at the committed positions only
        if method == "ancestral":
            t, s = 1 - step / steps, 1 - (step + 1) / steps
            if energy_model is not None and cfg.energy.t_end <= t <= cfg.energy.t_start:
                x0 = _edlm_x0(x, cand, logits, cfg, generator, energy_model, out)
            p = torch.full((B, T), (t - s) / t, dtype=torch.float64, device=x.device)
            if scale is not None:  # reweight, keeping the expected number of commits per sequence
                scale = scale.masked_fill(~cand, 0)
                total = scale.sum(1, keepdim=True)
                scale = torch.where(total > 0, scale * cand.sum(1, keepdim=True) / total.clamp_min(1e-300), 1.0)
                p = (p * scale).clamp(max=1.0)
            commit = cand & (torch.rand((B, T), generator=generator, device=x.device, dtype=torch.float64) < p)
        else:
            k, kmax = (None, 0) if method == "threshold" else (schedule[step], kmaxes[step])  # (B,), its max
            if method != "random" and cfg.commit.confidence == "prob":  # the score depends on the token drawn
                x0, commit = _prob_scores(logits, cand, scale, cfg, k, kmax, generator)
            else:  # random, margin, entropy: scored without a token; tokens drawn below where committed
                conf = (
                    torch.rand(len(logits), generator=generator, device=x.device, dtype=torch.float64)
                    if method == "random"
                    else confidence_of(logits, None, cfg.commit.confidence)
                )
                score = torch.full((B, T), float("-inf"), dtype=torch.float64, device=x.device)
                score[cand] = conf if scale is None else conf * scale[cand]
                commit = _commit(score, cand, cfg.commit.threshold, k, kmax)
        if x0 is None:
            x0 = torch.zeros_like(x).masked_scatter(
                commit, sample_categorical(logits[commit[cand]], cfg.temperature, generator)
            )
        x = torch.where(commit, x0, x)
        if cfg.cache.skip_unchanged:  # MDLM's no-change cache: host sync, one bool per step
            changed = bool(commit.any())
        out.history.append(_rows(commit))
        if on_step is not None:
            on_step(out.history[-1], x)
        step += 1
    return x


def _edlm_x0(x, cand, logits, cfg: SamplerConfig, generator, energy_model, out) -> torch.Tensor:
    """EDLM: k candidate x0 (all masked positions) from the tempered proposal, one resampled per sequence."""
    B, T = x.shape
    k = cfg.energy.candidates
    draws = sample_categorical(logits.expand(k, -1, -1), cfg.temperature, generator)  # (k, M)
    log_q_tok = (logits.double() / cfg.temperature).log_softmax(-1)  # (M, V) the proposal actually sampled
    log_q_tok = log_q_tok.expand(k, -1, -1).gather(-1, draws[..., None]).squeeze(-1)  # (k, M)
    row = cand.nonzero()[:, 0]  # (M,) the sequence of each masked position
    log_q = torch.zeros(k, B, dtype=torch.float64, device=x.device).index_add_(1, row, log_q_tok).T  # (B, k)
    seqs = x.expand(k, B, T).clone()
    seqs[:, cand] = draws
    candidates = seqs.transpose(0, 1)  # (B, k, T): sequence b's candidates are rows b*k .. b*k+k-1 below
    energy = candidate_energies(energy_model, candidates, cand, log_q)  # (B, k)
    out.energy_passes += 1
    chosen, _ = resample_by_energy(candidates, energy, cfg.energy.temperature, generator)
    return chosen

"""Log-likelihood of a continuation a given a context c, for AR and MDM runs.

AR (and ar_orderings read left to right): exact, log p(a | c) = Σ_j log p(a_j | c, a_<j).

MDM has no exact likelihood; four estimators of log p(a | c), the context never masked:

- `stratified` (LLaDA, 2502.09992 eq. 6): draw a count l ∈ {1..|a|}, mask exactly l answer
  positions chosen uniformly, score −(|a|/l) Σ_masked log p(a_i | c, a_unmasked). The l of the
  n samples are stratified, l_i = 1 + ⌊|a|·((u + i/n) mod 1)⌋. Same expectation as the random-t
  ELBO, lower variance: a sample never masks zero tokens and no weight exceeds |a|. One
  sample for single-token answers (then it is exact: log p(a_1 | c)). Default 128 samples.
- `random_t`: the plain MDLM ELBO on the answer: t ~ U(0,1) i.i.d., p = (1−ε)t + ε, mask each
  answer token with probability p, weight 1/p.
- `chain_l2r`: deterministic chain rule, answer unmasked left to right: |a| forwards (batched),
  Σ_j log p(a_j | c, a_<j, masks after j).
- `chain_confidence`: chain rule in the order the model is most sure of: at each step reveal
  the masked answer position whose predicted distribution has the highest max-probability.
  The order depends only on what is already revealed, so this is the exact likelihood of a
  proper generative process (greedy-position, sampled-token decoding): a valid log-likelihood,
  not an optimistic max over orders. It also tells whether greedy low-confidence decoding
  (one token per step) reproduces the answer (`is_greedy`).

The first two are unbiased for the ELBO, an upper bound on −log p (reported as a lower bound
on log p). Their noise is the MDM objective's (`count_masks`, `mask_rate` of
unmask.objectives.mdm, which validation draws too) and so is the cross-entropy; what is
scoring's own is the layout: one request's samples stratified together, the context never masked.
Optional unsupervised classifier-free guidance (MDM): logits = u + (w+1)(c − u),
u computed with the context replaced by mask tokens; w = 0 (default) is plain scoring.

Noise is drawn per request from a generator seeded by (seed, tokens of the request), so a
request scores the same whatever it is batched with or in which order (the lm-eval adapter
and `unmask eval --tasks` agree to float rounding).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from unmask.config import ConfigError
from unmask.evaluation.config import LikelihoodConfig
from unmask.objectives import Objective, get_objective
from unmask.objectives.ar import ar_token_nll, left_to_right
from unmask.objectives.base import token_cross_entropy
from unmask.objectives.mdm import count_masks, guided_logits, mask_rate


@dataclass
class Score:
    logprob: float
    """log p(a | c) (AR, chain estimators) or its MC estimate, a lower bound in expectation (MDM)."""
    is_greedy: bool
    """AR: every answer token is the argmax; MDM: greedy low-confidence decoding yields the answer."""
    stderr: float | None = None
    """Standard error of an MC estimate (None when exact or deterministic)."""
    forwards: int = 0
    """Model rows (sequence forwards) spent on this request."""


def encode_pair(tok, context: str, continuation: str, eod_id: int) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation), split as lm-evaluation-harness does.

    Trailing spaces of the context move to the continuation; the pair is encoded whole and
    split at the context's length (so the boundary token is the one the model reads); an
    empty context becomes the end-of-document token.
    """
    if not context:
        return [eod_id], tok.encode(continuation).ids
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole, ctx = tok.encode(context + continuation).ids, tok.encode(context).ids
    return ctx, whole[len(ctx) :]


def _request_generator(seed: int, context: Sequence[int], continuation: Sequence[int]) -> torch.Generator:
    ids = np.asarray([*context, -1, *continuation], dtype=np.int64).tobytes()
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(ids)) % 2**64)  # torch takes < 2**64


class ConditionalScorer:
    """Scores (context ids, continuation ids) requests with a loaded run's model."""

    def __init__(
        self,
        model: torch.nn.Module,
        objective: Objective | str,
        mask_id: int,
        pad_id: int,
        config: LikelihoodConfig | None = None,
    ):
        objective = get_objective(objective) if isinstance(objective, str) else objective
        self.model, self.objective, self.mask_id, self.pad_id = model.eval(), objective, mask_id, pad_id
        self.config = config or LikelihoodConfig()
        self.device = next(model.parameters()).device
        self.max_len = objective.context_limit(model.cfg.seq_len)
        if objective.exact and self.config.cfg_scale != 0:
            raise ConfigError(f"cfg_scale={self.config.cfg_scale}: guidance applies to MDM runs only; use 0")

    def fit(self, context: Sequence[int], continuation: Sequence[int]) -> tuple[list[int], list[int]]:
        """Truncate the context from the left so the pair fits the model (the continuation must fit whole)."""
        if not continuation:
            raise ConfigError("a continuation is empty after tokenisation; every choice needs at least one token")
        room = self.max_len - len(continuation)
        if room < 1:
            raise ConfigError(
                f"a continuation of {len(continuation)} tokens does not fit the model's seq_len "
                f"({self.model.cfg.seq_len}) with at least one context token"
            )
        return list(context)[-room:], list(continuation)

    @torch.no_grad()
    def score(
        self,
        requests: Sequence[tuple[Sequence[int], Sequence[int]]],
        greedy: bool = True,
        advance: Callable[[int], None] | None = None,
    ) -> list[Score]:
        """One Score per (context ids, continuation ids) request, in order.

        greedy: for MDM with a non-chain_confidence estimator, also run the confidence chain to
        fill `is_greedy` (|a| more forwards per request); False leaves is_greedy False.
        advance: progress callback, called with the number of requests finished.
        """
        pairs = [self.fit(c, a) for c, a in requests]
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))  # longest first
        scores: list[Score | None] = [None] * len(pairs)
        est = self.config.estimator
        if self.objective.exact:
            self._score_ar(pairs, order, scores, advance)
        elif est == "chain_confidence":
            self._score_chain_confidence(pairs, order, scores, advance)
        else:
            self._score_mdm_rows(pairs, order, scores, advance)
            if greedy:
                greedy_scores: list[Score | None] = [None] * len(pairs)
                self._score_chain_confidence(pairs, order, greedy_scores, None)
                for s, g in zip(scores, greedy_scores, strict=True):
                    s.is_greedy, s.forwards = g.is_greedy, s.forwards + g.forwards
        return scores  # type: ignore[return-value]

    # --- AR -------------------------------------------------------------------------------

    def _score_ar(self, pairs, order, scores, advance) -> None:
        budget = self.config.max_batch_tokens
        i = 0
        while i < len(order):
            T = len(pairs[order[i]][0]) + len(pairs[order[i]][1]) - 1  # inputs of the longest request
            chunk = order[i : i + max(1, budget // T)]
            i += len(chunk)
            x = torch.full((len(chunk), T + 1), self.pad_id, dtype=torch.long)
            scored = torch.zeros(len(chunk), T, dtype=torch.bool)  # input positions that predict an answer token
            for r, j in enumerate(chunk):
                ctx, ans = pairs[j]
                n = len(ctx) + len(ans)
                x[r, :n] = torch.tensor(ctx + ans)
                scored[r, len(ctx) - 1 : n - 1] = True
            x, scored = x.to(self.device), scored.to(self.device)
            # Right padding needs no key mask under causal attention: real positions never see it.
            nll, logits = ar_token_nll(self.model, x, scored, **left_to_right(x, self.objective.query_is_target))
            target = x[:, 1:][scored]
            hit = (logits.argmax(-1) == target).float()
            row = scored.nonzero()[:, 0]
            lp = torch.zeros(len(chunk), dtype=torch.float64, device=self.device).index_add_(0, row, -nll.double())
            miss = torch.zeros(len(chunk), device=self.device).index_add_(0, row, 1 - hit)
            for r, j in enumerate(chunk):
                scores[j] = Score(float(lp[r]), bool(miss[r] == 0), None, 1)
            if advance:
                advance(len(chunk))

    # --- MDM: Monte Carlo and left-to-right chain rows ---------------------------------------

    def _rows(self, ctx: list[int], ans: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(masked (n, L), scored (n, L), weight (n,)) over the answer positions of one request.

        The request's estimate is Σ_r weight_r Σ_{scored positions} −log p (weights include 1/n).
        """
        L, cfg = len(ans), self.config
        est = cfg.estimator
        if est == "chain_l2r":
            masked = torch.arange(L)[None, :] >= torch.arange(L)[:, None]  # row j: positions j.. masked
            return masked, torch.eye(L, dtype=torch.bool), torch.ones(L, dtype=torch.float64)
        g = _request_generator(cfg.seed, ctx, ans)
        if est == "stratified":  # the validation ELBO's count estimator, over the answer's positions
            n = 1 if L == 1 else cfg.mc_samples
            u = torch.rand((), generator=g, dtype=torch.float64)
            masked, weight = count_masks(L, u, torch.rand(n, L, generator=g))  # exactly l_i positions, L/l_i
            return masked, masked, weight / n
        n = cfg.mc_samples  # random_t: the training loss's noise levels, drawn i.i.d.
        p = mask_rate(torch.rand(n, generator=g, dtype=torch.float64), cfg.eps)
        masked = torch.rand(n, L, generator=g, dtype=torch.float64) < p[:, None]
        return masked, masked, (1.0 / p) / n

    def _score_mdm_rows(self, pairs, order, scores, advance) -> None:
        """Stream rows of requests (longest first) into forwards of at most max_batch_tokens tokens."""
        cfg = self.config
        per_row: dict[int, list[torch.Tensor]] = {j: [] for j in order}
        pending: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]] = []
        pending_rows, T_max = 0, 0

        def flush() -> None:
            nonlocal pending, pending_rows
            if not pending:
                return

            def pad(i: int, value) -> torch.Tensor:  # right-pad piece i of every pending entry to T_max
                return torch.cat([F.pad(p[i], (0, T_max - p[i].shape[1]), value=value) for p in pending])

            x_t, clean, scored = pad(1, self.pad_id), pad(2, self.pad_id), pad(3, False)
            weight = torch.cat([p[4] for p in pending])
            prompt = None
            if cfg.cfg_scale:
                prompt = torch.cat(
                    [F.pad(torch.ones(len(p[1]), p[5], dtype=torch.bool), (0, T_max - p[5])) for p in pending]
                )
            nll = self._weighted_nll(x_t, clean, scored, weight, prompt)  # (R,) float64 on the CPU
            s = 0
            for j, rows, *_ in pending:
                per_row[j].append(nll[s : s + len(rows)])
                s += len(rows)
            pending, pending_rows = [], 0

        for j in order:
            ctx, ans = pairs[j]
            P, L = len(ctx), len(ans)
            masked, scored, weight = self._rows(ctx, ans)
            n = len(masked)
            clean = torch.tensor(ctx + ans)[None].expand(n, -1)
            no_context = torch.zeros(n, P, dtype=torch.bool)
            full_scored = torch.cat([no_context, scored], 1)
            x_t = clean.masked_fill(torch.cat([no_context, masked], 1), self.mask_id)
            s = 0
            while s < n:  # a request's rows may span several forwards
                if not pending:
                    T_max = P + L  # requests come longest first: the first of a forward is the longest
                cap = max(1, cfg.max_batch_tokens // (T_max * (2 if cfg.cfg_scale else 1)))
                if pending_rows >= cap:
                    flush()
                    continue
                take = min(n - s, cap - pending_rows)
                sl = slice(s, s + take)
                pending.append((j, x_t[sl], clean[sl], full_scored[sl], weight[sl], P))
                pending_rows += take
                s += take
            if advance:
                advance(1)
        flush()
        for j in order:
            vals = torch.cat(per_row[j])
            n = len(vals)
            stderr = None
            if cfg.estimator != "chain_l2r" and n > 1:
                stderr = float((vals * n).std() / math.sqrt(n))  # vals carry the 1/n of the mean
            scores[j] = Score(-float(vals.sum()), False, stderr, n)

    def _weighted_nll(self, x_t, clean, scored, weight, prompt) -> torch.Tensor:
        """Σ over scored positions of weight · (−log p(clean | x_t)), per row (R,), float64 on the CPU.

        Rows are right-padded with pad_id, which is never attended to.
        """
        x_t, clean, scored = x_t.to(self.device), clean.to(self.device), scored.to(self.device)
        logits = self._logits(x_t, scored, prompt)  # (M, V), the mask id excluded
        nll = token_cross_entropy(self.model, logits, clean[scored]).double()  # the objectives' CE, float32
        row = scored.nonzero()[:, 0]
        w = weight.to(self.device)[row]
        return torch.zeros(len(x_t), dtype=torch.float64, device=self.device).index_add_(0, row, w * nll).cpu()

    def _logits(self, x_t: torch.Tensor, out_mask: torch.Tensor, prompt: torch.Tensor | None) -> torch.Tensor:
        """MDM logits (M, V) at out_mask, mask id excluded, guided when cfg_scale ≠ 0.

        prompt: (R, T) True at context positions (replaced by masks in the unconditional twin).
        """
        real = x_t != self.pad_id
        kpm = None if bool(real.all()) else real  # host-device sync: one bool per forward
        w = self.config.cfg_scale
        if w:
            uncond = x_t.masked_fill(prompt.to(self.device), self.mask_id)
            logits = guided_logits(self.model, x_t, uncond, out_mask, w, key_padding_mask=kpm)
        else:
            logits = self.model(x_t, key_padding_mask=kpm, output_mask=out_mask).float()
        logits[:, self.mask_id] = float("-inf")  # the clean data never contains the mask token
        return logits

    # --- MDM: chain rule in confidence order --------------------------------------------------

    def _score_chain_confidence(self, pairs, order, scores, advance) -> None:
        budget = self.config.max_batch_tokens
        i = 0
        while i < len(order):
            T = len(pairs[order[i]][0]) + len(pairs[order[i]][1])
            chunk = order[i : i + max(1, budget // (T * (2 if self.config.cfg_scale else 1)))]
            i += len(chunk)
            B = len(chunk)
            clean = torch.full((B, T), self.pad_id, dtype=torch.long)
            masked = torch.zeros(B, T, dtype=torch.bool)
            prompt = torch.zeros(B, T, dtype=torch.bool)
            for r, j in enumerate(chunk):
                ctx, ans = pairs[j]
                clean[r, : len(ctx) + len(ans)] = torch.tensor(ctx + ans)
                masked[r, len(ctx) : len(ctx) + len(ans)] = True
                prompt[r, : len(ctx)] = True
            clean, masked, prompt = clean.to(self.device), masked.to(self.device), prompt.to(self.device)
            lp = torch.zeros(B, dtype=torch.float64, device=self.device)
            greedy = torch.ones(B, dtype=torch.bool, device=self.device)
            steps = max(len(pairs[j][1]) for j in chunk)
            for _ in range(steps):
                active = masked.any(1)  # rows with answer tokens left
                rows = active.nonzero()[:, 0]
                m = masked[rows]
                x_t = clean[rows].masked_fill(m, self.mask_id)
                logp = self._logits(x_t, m, prompt[rows] if self.config.cfg_scale else None).log_softmax(-1)
                conf = torch.full(m.shape, float("-inf"), device=self.device)
                conf[m] = logp.max(-1).values
                pick = conf.argmax(1)  # (A,) most confident masked position of each active row
                flat = torch.cumsum(m.flatten(), 0).view(m.shape) - 1  # index of each masked position in logp
                k = flat[torch.arange(len(rows), device=self.device), pick]
                target = clean[rows, pick]
                lp[rows] += logp[k, target].double()
                greedy[rows] &= logp[k].argmax(-1) == target
                masked[rows, pick] = False
            for r, j in enumerate(chunk):
                scores[j] = Score(float(lp[r]), bool(greedy[r]), None, len(pairs[j][1]))
            if advance:
                advance(B)

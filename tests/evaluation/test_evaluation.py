"""Evaluation: honest ELBOs, conditional likelihoods, zero-shot multiple choice, lm-eval adapter."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import tiny_model_config, tiny_train_config
from unmask.config import ConfigError, ModelConfig
from unmask.evaluation.conditional import ConditionalScorer, LikelihoodConfig, encode_pair
from unmask.evaluation.likelihood import token_byte_lengths, validation_loss
from unmask.model import Transformer, select_positions
from unmask.objectives import Specials, get_objective

MASK, PAD = 1, 2  # ids used by the stub models below


class Factorised(nn.Module):
    """A denoiser whose prediction at position i is a fixed distribution q_i, whatever the input.

    Its exact likelihood is Π_i q_i(x_i) (every any-order chain gives the same product), so the
    MDM ELBO, E_t E_mask Σ_masked −log q_i / p, equals the exact NLL: the bound is tight.
    """

    def __init__(self, seq_len: int, vocab: int, seed: int = 0):
        super().__init__()
        self.cfg = ModelConfig(n_layer=1, d_model=8, n_head=2, vocab_size=vocab, seq_len=seq_len, causal=False)
        self.table = nn.Parameter(torch.randn(seq_len, vocab, generator=torch.Generator().manual_seed(seed)))

    def forward(self, idx, pos=None, query_pos=None, key_padding_mask=None, output_mask=None):
        logits = self.table[: idx.shape[1]].expand(idx.shape[0], -1, -1)  # (B, T, V)
        return logits if output_mask is None else select_positions(logits, output_mask)

    def exact_nll(self, x: torch.Tensor) -> torch.Tensor:
        """Per-position −log q_i(x_i), the mask id excluded from the softmax as in scoring."""
        logits = self.table[: len(x)].detach().clone()
        logits[:, MASK] = float("-inf")
        return -logits.log_softmax(-1).gather(1, x[:, None]).squeeze(1)


def small_mdm(vocab: int = 8, seq_len: int = 8, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(n_layer=1, d_model=16, n_head=2, vocab_size=vocab, seq_len=seq_len, causal=False))
    for p in model.parameters():  # a larger init, so predictions really depend on the context
        nn.init.normal_(p, std=0.5) if p.dim() == 2 else None
    return model.eval()


def scorer(model, objective="mdm", **kw) -> ConditionalScorer:
    return ConditionalScorer(model, objective, MASK, PAD, LikelihoodConfig(**kw))


def score(model, ctx, ans, objective="mdm", **kw):
    return scorer(model, objective, **kw).score([(ctx, ans)], greedy=False)[0]


@torch.no_grad()
def exact_answer_elbo_and_nll(model, ctx: list[int], ans: list[int]) -> tuple[float, float]:
    """Exact −ELBO and exact −log p of the answer for an MDM denoiser, by enumeration.

    ELBO: the count estimator's expectation, Σ_{l=1..L} (1/l) E_{|M|=l} Σ_{i∈M} −log p(a_i | c, a_¬M),
    with every subset M enumerated. It is also the mean over the L! decoding orders σ of
    −log p_σ(a) (the any-order chain rule). The model's likelihood is that of decoding in a
    uniformly random order: p(a) = mean_σ p_σ(a), so by Jensen −log p(a) ≤ ELBO, with equality
    when every order gives the same p_σ(a) (a factorised model).
    """
    P, L = len(ctx), len(ans)
    x = torch.tensor(ctx + ans)

    def nll_at(masked_set: tuple[int, ...]) -> torch.Tensor:  # −log p(a_i | c, a outside the set), i in the set
        x_t = x.clone()
        x_t[[P + i for i in masked_set]] = MASK
        logits = model(x_t[None])[0].float()
        logits[:, MASK] = float("-inf")
        lp = logits.log_softmax(-1)
        return torch.stack([-lp[P + i, ans[i]] for i in masked_set])

    elbo = 0.0
    cache = {}
    for size in range(1, L + 1):
        subsets = list(itertools.combinations(range(L), size))
        for subset in subsets:
            cache[subset] = nll_at(subset)
            elbo += float(cache[subset].sum()) / size / math.comb(L, size)
    log_ps = []
    for sigma in itertools.permutations(range(L)):
        total = 0.0
        for j, pos in enumerate(sigma):
            still = tuple(sorted(sigma[j:]))
            total += float(cache[still][still.index(pos)])
        log_ps.append(-total)
    nll = -(torch.logsumexp(torch.tensor(log_ps, dtype=torch.float64), 0) - math.log(len(log_ps)))
    return elbo, float(nll)


# --- the ELBO and the exact likelihood ---------------------------------------------------------


def test_elbo_equals_the_exact_nll_of_a_factorised_model():
    model = Factorised(seq_len=8, vocab=12)
    ctx, ans = [5, 7, 3], [4, 9, 6, 11, 8]
    exact = float(model.exact_nll(torch.tensor(ctx + ans))[len(ctx) :].sum())
    elbo, nll = exact_answer_elbo_and_nll(model, ctx, ans)
    assert elbo == pytest.approx(exact, abs=1e-5) and nll == pytest.approx(exact, abs=1e-5)  # the bound is tight
    for estimator in ("chain_l2r", "chain_confidence"):  # deterministic: exact here
        assert -score(model, ctx, ans, estimator=estimator).logprob == pytest.approx(exact, abs=1e-5)
    for estimator in ("stratified", "random_t"):  # unbiased: within 4 standard errors with many samples
        s = score(model, ctx, ans, estimator=estimator, mc_samples=4096)
        assert abs(-s.logprob - exact) < 4 * s.stderr, (estimator, s, exact)


def test_elbo_bounds_the_exact_nll_of_a_contextual_model_and_estimators_converge_to_it():
    model = small_mdm()
    ctx, ans = [3, 5], [4, 6, 3, 7]
    elbo, nll = exact_answer_elbo_and_nll(model, ctx, ans)
    print(f"exact answer ELBO {elbo:.4f} >= exact NLL {nll:.4f}")
    assert elbo > nll + 1e-3  # a strict gap: the model's conditionals are not those of one joint
    for estimator in ("stratified", "random_t"):
        s = score(model, ctx, ans, estimator=estimator, mc_samples=8192)
        assert abs(-s.logprob - elbo) < 4 * s.stderr, (estimator, s, elbo)
    chain = -score(model, ctx, ans, estimator="chain_l2r").logprob
    x = torch.tensor(ctx + ans)
    manual = 0.0
    for j in range(len(ans)):  # left to right by hand
        x_t = x.clone()
        x_t[len(ctx) + j :] = MASK
        logits = model(x_t[None])[0].detach()
        logits[:, MASK] = float("-inf")
        manual -= float(logits.log_softmax(-1)[len(ctx) + j, ans[j]])
    assert chain == pytest.approx(manual, abs=1e-5)


def val_loss(model, data, objective: str, **options):
    """The validation loss of `model` on the tiny data's validation split."""
    specials = Specials(mask_id=data.mask_id, pad_id=data.pad_id)
    return validation_loss(model, data.split("val"), get_objective(objective), specials, **options)


def test_validation_elbo_of_a_factorised_model_converges_to_its_exact_nll(tiny_data):
    model = Factorised(seq_len=tiny_data.seq_len, vocab=tiny_data.vocab_size)
    n = tiny_data.n_sequences("val")
    x = tiny_data.batch("val", np.arange(n)).tokens
    scored = x != tiny_data.pad_id
    scored[:, 0] = False  # the first token of each sequence is context, as for AR
    exact = float(torch.stack([model.exact_nll(row) for row in x])[scored].mean())
    val = val_loss(model, tiny_data, "mdm", mc_passes=64, batch_size=8)
    print(f"validation ELBO {val.loss:.4f} ± {val.stderr:.4f}, exact NLL {exact:.4f}")
    assert abs(val.loss - exact) < 4 * val.stderr
    assert val.kind.startswith("ELBO") and val.n_tokens == int(scored.sum())


def test_validation_elbo_does_not_depend_on_the_memory_budget(tiny_data):
    model = Transformer(tiny_model_config(tiny_data, causal=False))
    a = val_loss(model, tiny_data, "mdm", mc_passes=6, batch_size=16, max_batch_tokens=32)
    b = val_loss(model, tiny_data, "mdm", mc_passes=6, batch_size=16, max_batch_tokens=100_000)
    assert a.loss == pytest.approx(b.loss, abs=1e-6) and a.stderr == pytest.approx(b.stderr, abs=1e-6)


def test_bits_per_byte_counts_the_bytes_of_the_validation_text(tiny_data):
    tok = tiny_data.tokenizer()
    table = token_byte_lengths(tok)
    ids = tiny_data.tokens["val"].tolist()
    text = tok.decode([i for i in ids if i != tiny_data.eod_id])
    assert int(table[ids].sum()) == len(text.encode("utf-8"))
    assert table[[tiny_data.eod_id, tiny_data.mask_id, tiny_data.pad_id]].sum() == 0
    model = Transformer(tiny_model_config(tiny_data, causal=True))
    val = val_loss(model, tiny_data, "ar", byte_lengths=table)
    assert val.bits_per_byte == pytest.approx(val.loss * val.n_tokens / (math.log(2) * val.n_bytes))
    assert 0 < val.n_bytes < len(text.encode("utf-8"))  # AR scores every token but the first of each sequence


# --- conditional likelihood ----------------------------------------------------------------------


def test_ar_conditional_likelihood_is_exact():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(n_layer=1, d_model=16, n_head=2, vocab_size=16, seq_len=8, causal=True)).eval()
    ctx, ans = [3, 4, 5], [6, 7]
    logits = model(torch.tensor([ctx + ans[:-1]]))[0].detach().log_softmax(-1)
    expected = float(logits[2, 6] + logits[3, 7])
    s = score(model, ctx, ans, objective="ar")
    assert s.logprob == pytest.approx(expected, abs=1e-5) and s.stderr is None
    greedy = model(torch.tensor([ctx + ans[:-1]]))[0].argmax(-1)[2:].tolist() == ans
    assert s.is_greedy == greedy


def test_scores_do_not_depend_on_batching_or_order():
    model = small_mdm(vocab=12, seq_len=8)
    reqs = [([3, 4], [5, 6, 7]), ([8], [9]), ([3, 4, 5, 6], [7, 8, 9, 10]), ([11, 3], [4, 5])]
    for estimator in ("stratified", "random_t", "chain_l2r", "chain_confidence"):
        alone = [scorer(model, estimator=estimator, mc_samples=16).score([r])[0] for r in reqs]
        together = scorer(model, estimator=estimator, mc_samples=16, max_batch_tokens=40).score(reqs[::-1])[::-1]
        for a, b in zip(alone, together, strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-5), estimator
            assert a.is_greedy == b.is_greedy
    guided = [scorer(model, mc_samples=8, cfg_scale=0.5).score([r])[0].logprob for r in reqs]
    guided_together = scorer(model, mc_samples=8, cfg_scale=0.5, max_batch_tokens=40).score(reqs[::-1])[::-1]
    assert [s.logprob for s in guided_together] == pytest.approx(guided, abs=1e-5)
    one_token = scorer(model, mc_samples=16).score([([3], [4])])[0]
    assert one_token.forwards == 1 + 1 and one_token.stderr is None  # one exact sample (+1 greedy check)


def test_guidance_zero_is_plain_scoring_and_ar_rejects_it():
    model = small_mdm(vocab=12, seq_len=8)
    ctx, ans = [3, 4, 5], [6, 7, 8]
    plain = score(model, ctx, ans, estimator="chain_l2r").logprob
    assert score(model, ctx, ans, estimator="chain_l2r", cfg_scale=0.0).logprob == plain
    guided = score(model, ctx, ans, estimator="chain_l2r", cfg_scale=1.0).logprob
    assert math.isfinite(guided) and guided != pytest.approx(plain)
    with pytest.raises(ConfigError, match="guidance applies to MDM runs only"):
        scorer(Transformer(ModelConfig(n_layer=1, d_model=16, n_head=2, vocab_size=12, seq_len=8)), "ar", cfg_scale=1)


def test_context_is_truncated_from_the_left_and_overlong_answers_are_rejected():
    model = small_mdm(vocab=12, seq_len=8)
    s = scorer(model)
    assert s.fit(list(range(3, 12)), [4, 5]) == ([6, 7, 8, 9, 10, 11], [4, 5])
    with pytest.raises(ConfigError, match="does not fit the model's seq_len"):
        s.fit([3], [4] * 8)
    with pytest.raises(ConfigError, match="estimator='elbo': must be one of"):
        LikelihoodConfig(estimator="elbo")


def test_encode_pair_moves_trailing_spaces_to_the_continuation(tiny_data):
    tok = tiny_data.tokenizer()
    ctx, cont = encode_pair(tok, "She was ", "happy", tiny_data.eod_id)
    assert ctx == tok.encode("She was").ids and ctx + cont == tok.encode("She was happy").ids
    assert encode_pair(tok, "", "happy", tiny_data.eod_id) == ([tiny_data.eod_id], tok.encode("happy").ids)


@pytest.fixture(scope="module")
def tiny_mdm_run(tiny_data, tmp_path_factory):
    from unmask.training import train

    out = tmp_path_factory.mktemp("runs") / "mdm"
    cfg = tiny_train_config(objective="mdm", epochs=4, eval_every=1000)
    return train(tiny_data.path, out, tiny_model_config(tiny_data, causal=False), cfg, quiet=True, tensorboard=False)


@pytest.fixture(scope="module")
def tiny_ar_run(tiny_data, tmp_path_factory):
    from unmask.training import train

    out = tmp_path_factory.mktemp("runs") / "ar"
    cfg = tiny_train_config(objective="ar", epochs=1, eval_every=1000)
    return train(tiny_data.path, out, tiny_model_config(tiny_data), cfg, quiet=True, tensorboard=False)


def test_stratified_estimator_has_lower_variance_than_random_t(tiny_data, tiny_mdm_run):
    """Same model, same answers, same number of forward passes (16 per estimate), 24 seeds."""
    from unmask.run import Run

    model = Run(tiny_mdm_run).load_model("last")
    x = tiny_data.batch("val", np.arange(3)).tokens
    reqs = [(row[:20].tolist(), row[20:28].tolist()) for row in x]  # 8-token answers
    spread = {}
    for estimator in ("stratified", "random_t"):
        runs = [
            [s.logprob for s in scorer(model, estimator=estimator, mc_samples=16, seed=seed).score(reqs, greedy=False)]
            for seed in range(24)
        ]
        spread[estimator] = np.std(np.array(runs), axis=0, ddof=1)  # (requests,) std across seeds
    print(f"std across seeds, 16 forwards each: stratified {spread['stratified']}, random_t {spread['random_t']}")
    assert np.all(spread["stratified"] < spread["random_t"])


# --- zero-shot multiple choice and the lm-eval adapter ----------------------------------------------

DATA = Path(__file__).parents[1] / "fixtures"


def test_wilson_interval_matches_the_closed_form():
    from unmask.evaluation.zeroshot import wilson_interval

    lo, hi = wilson_interval(7, 10)
    assert (lo, hi) == pytest.approx((0.3968, 0.8922), abs=1e-4)  # textbook value for 7/10
    assert wilson_interval(0, 10)[0] == 0 and wilson_interval(10, 10)[1] == pytest.approx(1)


def test_bad_task_lines_are_one_line_errors(tmp_path):
    from unmask.evaluation.zeroshot import read_items

    bad = tmp_path / "bad.jsonl"
    for line, needle in (
        ('{"context": "a", "choices": ["x"], "label": 0}', "at least two"),
        ('{"context": "a", "choices": ["x", "y"], "label": 2}', "'label'"),
        ('{"context": "a", "choices": ["x", "y"], "gold_text": "z"}', "not one of the choices"),
        ("{not json", "not valid JSON"),
    ):
        bad.write_text(line + "\n")
        with pytest.raises(ConfigError, match=needle):
            read_items(bad)
    assert read_items(DATA / "austen_mc.jsonl")[1].label == 2  # label from gold_text agrees


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["mdm", "ar"])
def test_lm_eval_adapter_gives_the_same_numbers_as_unmask_eval(request, tmp_path, monkeypatch, objective):
    """End to end through lm-eval's CLI with a local task YAML over tests/fixtures/austen_mc.jsonl."""
    pytest.importorskip("lm_eval")
    import json
    import sys

    from unmask.cli.lm_eval import main as lm_eval_main
    from unmask.evaluation.zeroshot import evaluate_tasks

    run = request.getfixturevalue(f"tiny_{objective}_run")
    mine = evaluate_tasks(run, [str(DATA / "austen_mc.jsonl")], "last", LikelihoodConfig(mc_samples=16), progress=False)
    mine = mine["austen_mc"]

    monkeypatch.chdir(DATA)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    out = tmp_path / "lm_eval"
    argv = ["unmask-lm-eval", "--model", "unmask", "--model_args", f"run={run},which=last,mc_samples=16"]
    argv += ["--include_path", "lm_eval", "--tasks", "austen_mc", "--output_path", str(out), "--log_samples"]
    monkeypatch.setattr(sys, "argv", argv)
    lm_eval_main()
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["austen_mc"]
    samples = [json.loads(line) for line in next(out.rglob("samples_austen_mc_*.jsonl")).read_text().splitlines()]
    print(f"{objective}: unmask eval acc {mine['acc']:.3f} acc_norm {mine['acc_norm']:.3f}; lm-eval {results}")
    assert results["acc,none"] == pytest.approx(mine["acc"]) and results["acc_norm,none"] == pytest.approx(
        mine["acc_norm"]
    )
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        lls = [float(r[0]) for r in s["filtered_resps"]]  # lm-eval logs them as strings
        assert lls == pytest.approx(mine["items"][s["doc_id"]]["loglikelihoods"], abs=1e-4)


def test_eval_compare_prints_one_table_and_writes_csv_and_json(capsys, tiny_mdm_run, tiny_ar_run, tmp_path):
    import csv
    import json

    from unmask import cli

    args = ["eval", "compare", tiny_ar_run, tiny_mdm_run, "--which", "last", "--mc_passes", "2"]
    args += ["--tasks", DATA / "austen_mc.jsonl", "--limit", "4", "--likelihood.mc_samples", "4"]
    assert cli.main([str(a) for a in [*args, "--out", tmp_path / "cmp"]]) == 0
    out = capsys.readouterr().out
    for needle in ("bits per byte", "austen_mc acc [95% CI]", "exact log-likelihood", "stratified, 4 samples", "ELBO"):
        assert needle in out, needle
    rows = list(csv.DictReader(open(tmp_path / "cmp.csv")))
    assert [r["objective"] for r in rows] == ["ar", "mdm"] and rows[0]["val_kind"] == "NLL"
    assert float(rows[1]["austen_mc/acc_ci95_low"]) <= float(rows[1]["austen_mc/acc"])
    results = json.loads((tmp_path / "cmp.json").read_text())
    assert len(results[1]["tasks"]["austen_mc"]["items"]) == 4 and results[1]["stderr"] > 0


def test_eval_rejects_a_bad_estimator_in_one_line(capsys, tiny_mdm_run):
    from unmask import cli

    code = cli.main(["eval", str(tiny_mdm_run), "--likelihood.estimator", "exact"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "likelihood.estimator" in err, err


@pytest.mark.parametrize("objective", ["ar", "mdm"])
def test_lm_eval_adapter_rolling_and_generation(request, objective):
    pytest.importorskip("lm_eval")
    from unmask.lm_eval import UnmaskLM

    run = request.getfixturevalue(f"tiny_{objective}_run")
    lm = UnmaskLM(run=str(run), which="last", device="cpu", mc_samples=8, greedy=False, steps=4)
    short = "She was very happy."
    (rolling,) = lm.loglikelihood_rolling([(short,)])
    ((whole, _),) = lm.loglikelihood([("", short)])  # empty context = the end-of-document token, as rolling
    assert rolling == pytest.approx(whole, abs=1e-6)
    long = " ".join(["She was very happy, and he was not."] * 12)  # several windows of seq_len
    (long_ll,) = lm.loglikelihood_rolling([(long,)])
    assert math.isfinite(long_ll) and long_ll < rolling
    texts = lm.generate_until([("She was", {"until": ["\n\n"], "max_gen_toks": 8}), ("He", {"until": [" "]})])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts) and " " not in texts[1]

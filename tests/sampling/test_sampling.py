"""The demo's samplers: exact categorical sampling, MDM commit schedule, committed tokens frozen."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch import nn

from unmask.config import ConfigError, ModelConfig
from unmask.model import Transformer
from unmask.sampling import SamplerConfig, sample_ar, sample_categorical, sample_mdm
from unmask.sampling.gumbel import sample_with_confidence
from unmask.sampling.mdm import commit_schedule


def test_gumbel_max_matches_softmax_at_temperature():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -3.0])
    n, temperature = 40_000, 0.7
    draws = sample_categorical(logits.expand(n, -1), temperature, torch.Generator().manual_seed(0))
    observed = np.bincount(draws.numpy(), minlength=5)
    expected = torch.softmax(logits.double() / temperature, -1).numpy() * n
    assert chisquare(observed, expected).pvalue > 1e-3


def test_gumbel_noise_is_float64_so_rare_tokens_keep_their_probability(monkeypatch):
    # The largest Gumbel draw is -log(-log(u_max)), u_max the largest float below 1: about 16.6
    # in float32 but 36.7 in float64. A token 25 nats below the top is reachable only in float64.
    def gumbel_max(dtype):
        u_max = torch.tensor(1.0, dtype=dtype).nextafter(torch.tensor(0.0, dtype=dtype)).double()
        return float(-torch.log(-torch.log(u_max)))

    assert gumbel_max(torch.float32) < 25 < gumbel_max(torch.float64)
    dtypes = []
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: dtypes.append(k.get("dtype")) or real_rand(*a, **k))
    sample_categorical(torch.zeros(3, 5), 1.0)
    assert dtypes == [torch.float64]


def inverse_cdf_float64(logits: torch.Tensor, temperature: float, u: torch.Tensor) -> torch.Tensor:
    """The reference: the float64 inverse CDF of the uniforms u (M,) under softmax(logits / temperature)."""
    z = logits.double() / temperature
    cdf = (z - z.amax(-1, keepdim=True)).exp().cumsum(-1)
    return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]


@pytest.mark.parametrize("V", [1000, 1024])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("spread", [0.3, 3.0, 10.0])
def test_draws_with_confidence_equal_the_float64_inverse_cdf_and_bound_their_error(V, temperature, spread):
    # Float32 sums with a certified error bound; rows too close to a token boundary are redone in
    # float64, so every token is the one the float64 inverse CDF of the same uniform picks.
    torch.manual_seed(0)
    logits = torch.randn(2000, V) * spread
    logits[:, 1] = float("-inf")  # a banned token
    x, conf, err = sample_with_confidence(logits, temperature, torch.Generator().manual_seed(5))
    u = torch.rand(2000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.equal(x, inverse_cdf_float64(logits, temperature, u)) and not (x == 1).any()
    exact = torch.softmax(logits.double(), -1).gather(-1, x[:, None])[:, 0]  # p(x) at temperature 1
    assert ((conf - exact).abs() <= err).all() and (err <= 1e-4 * exact).all()


@pytest.mark.parametrize("rows", [50, 600])  # small inputs take float64 throughout, larger ones the certified path
def test_draws_with_confidence_at_temperature_zero_are_the_argmax_and_its_probability(rows):
    logits = torch.randn(rows, 300) * 4
    x, conf, err = sample_with_confidence(logits, 0.0)
    assert torch.equal(x, logits.argmax(-1))
    assert ((conf - torch.softmax(logits.double(), -1).amax(-1)).abs() <= (0 if err is None else err)).all()


@pytest.mark.parametrize("temperature", [0.0, 0.8, 1.0])
def test_small_inputs_in_float64_draw_the_same_tokens_as_the_certified_path(monkeypatch, temperature):
    import unmask.sampling.gumbel as gumbel

    logits = torch.randn(64, 1024) * 3
    monkeypatch.setattr(gumbel, "EXACT_UP_TO", logits.numel())
    small = sample_with_confidence(logits, temperature, torch.Generator().manual_seed(1))
    monkeypatch.setattr(gumbel, "EXACT_UP_TO", 0)
    certified = sample_with_confidence(logits, temperature, torch.Generator().manual_seed(1))
    assert small[2] is None and certified[2] is not None
    assert torch.equal(small[0], certified[0])
    assert ((small[1] - certified[1]).abs() <= certified[2] + 1e-12 * small[1]).all()  # float64 rounding aside


def test_draws_with_confidence_follow_softmax_at_temperature():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -3.0])
    n, temperature = 40_000, 0.7
    draws, _, _ = sample_with_confidence(logits.expand(n, -1), temperature, torch.Generator().manual_seed(0))
    observed = np.bincount(draws.numpy(), minlength=5)
    expected = torch.softmax(logits.double() / temperature, -1).numpy() * n
    assert chisquare(observed, expected).pvalue > 1e-3


def test_temperature_zero_is_argmax():
    logits = torch.randn(7, 11)
    assert torch.equal(sample_categorical(logits, 0.0), logits.argmax(-1))


def test_commit_schedule_spreads_the_remainder_over_the_first_steps():
    assert commit_schedule(10, 4) == [3, 3, 2, 2]
    assert sum(commit_schedule(48, 7)) == 48


class Recorder(nn.Module):
    """A random bidirectional model that records every input it is given."""

    def __init__(self, vocab: int = 20, seq_len: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.model = Transformer(ModelConfig(size="tiny", vocab_size=vocab, seq_len=seq_len, causal=False))
        self.cfg = self.model.cfg
        self.inputs: list[torch.Tensor] = []

    def forward(self, idx, **kwargs):
        self.inputs.append(idx.clone())
        return self.model(idx, **kwargs)


def test_mdm_commits_the_scheduled_count_and_never_changes_a_committed_token():
    model, mask = Recorder(), 1
    prompt = torch.tensor([[5, 6, 7], [8, 9, 10]])
    cfg = SamplerConfig.from_flat(method="low_confidence", steps=4, temperature=1.0)
    out = sample_mdm(model, prompt, 10, mask, cfg, generator=torch.Generator().manual_seed(0))
    states = model.inputs + [out.tokens]
    for step, k in enumerate(commit_schedule(10, 4)):
        before, after = states[step], states[step + 1]
        newly = (before == mask) & (after != mask)
        assert (newly.sum(1) == k).all()
        kept = before != mask
        assert torch.equal(after[kept], before[kept])  # committed (and prompt) tokens never change
    assert (out.tokens != mask).all() and torch.equal(out.tokens[:, :3], prompt)
    assert out.forward_passes == 4 and len(out.history) == 4


def test_ar_greedy_decoding_is_the_argmax_of_a_full_forward_at_every_step():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=20, seq_len=8, causal=True)).eval()
    prompt = torch.tensor([[3, 4], [7, 1]])
    out = sample_ar(model, prompt, 10).tokens  # longer than seq_len: the context window slides
    assert out.shape == (2, 12) and torch.equal(out[:, :2], prompt)
    x = prompt
    for _ in range(6):  # while the context fits the model: greedy by hand, no cache, batch by batch
        x = torch.cat([x, model(x)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out[:, :8], x)
    assert torch.equal(out, sample_ar(model, prompt, 10, use_cache=False).tokens)  # the cache changes nothing


def test_ar_orderings_runs_decode_with_target_positions_in_the_queries():
    """Greedy decoding of an ar_orderings model must score exactly as its loss does (identity order)."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(size="tiny", vocab_size=20, seq_len=8, causal=True)).eval()
    prompt = torch.tensor([[3, 4, 5]])
    out = sample_ar(model, prompt, 1, query_is_target=True).tokens
    pos = torch.arange(3)[None]
    assert out[0, 3] == model(prompt, pos=pos, query_pos=pos + 1)[0, -1].argmax()
    long = sample_ar(model, prompt, 10, query_is_target=True).tokens  # crops to seq_len - 1
    assert long.shape == (1, 13)


# --- text in, text out: run directories, the CLI, traces, infilling, bench ---------------------------


@pytest.fixture(scope="module")
def tiny_runs(tiny_data, tmp_path_factory):
    """An untrained MDM run and an untrained AR run (same tokenizer): enough to exercise every path."""
    import json
    import shutil

    from tests.conftest import tiny_model_config
    from unmask.config import TrainConfig, to_dict
    from unmask.model import save_model

    runs = {}
    for objective in ("mdm", "ar"):
        run = tmp_path_factory.mktemp(objective)
        torch.manual_seed(0)
        mcfg = tiny_model_config(tiny_data, causal=objective == "ar")
        net = Transformer(mcfg)
        save_model(net, run / "best.safetensors")
        save_model(net, run / "last.safetensors")
        shutil.copyfile(tiny_data.path / "tokenizer.json", run / "tokenizer.json")
        config = {
            "data": str(tiny_data.path),
            "model": to_dict(mcfg),
            "train": to_dict(TrainConfig(objective=objective)),
        }
        (run / "config.json").write_text(json.dumps(config))
        runs[objective] = run
    return runs


def unmask_cli(capsys, *args) -> tuple[int, str, str]:
    from unmask import cli

    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_trace_replays_the_denoising(tiny_runs, tiny_data, capsys, tmp_path):
    import json

    trace = tmp_path / "trace.jsonl"
    args = ("--length", 12, "--n", 2, "--sampler.method", "threshold", "--sampler.block_length", 4, "--json", "true")
    code, out, err = unmask_cli(capsys, "sample", tiny_runs["mdm"], "--prompt", "She was", *args, "--trace", trace)
    assert code == 0, err
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    canvas = torch.tensor(records[0]["canvas"])
    for r in records[1:]:  # replay: every step fills masked positions only, with the tokens it names
        for b, (positions, tokens) in enumerate(zip(r["positions"], r["tokens"], strict=True)):
            assert (canvas[b, positions] == tiny_data.mask_id).all()
            canvas[b, positions] = torch.tensor(tokens, dtype=canvas.dtype)
    assert (canvas != tiny_data.mask_id).all() and canvas.shape[1] == len(records[0]["canvas"][0])
    tok = tiny_data.tokenizer()
    assert json.loads(out)["texts"] == [tok.decode(row.tolist()) for row in canvas]


def test_infilling_from_blanks_and_explicit_spans_keeps_the_given_text(tiny_runs, tiny_data):
    from unmask.sampling.text import decode

    gen = decode(tiny_runs["mdm"], "She ____ was", n=2, length=0, blank_length=3)
    assert all(t.startswith("She") and t.endswith(" was") for t in gen.texts)
    ids = tiny_data.tokenizer().encode("It is a truth universally acknowledged").ids
    gen = decode(tiny_runs["mdm"], "It is a truth universally acknowledged", length=0, mask_spans=["1-3"])
    kept = [i for i in range(len(ids)) if not 1 <= i < 3]
    assert gen.output.tokens[0, kept].tolist() == [ids[i] for i in kept]
    assert (gen.output.tokens != tiny_data.mask_id).all() and len(gen.output.history) == 2


@pytest.mark.parametrize(
    "args, match",
    [
        (("--sampler.method", "threshold"), "ar run .*: method: MDM-only"),
        (("--prompt", "a ____ b"), "blanks / mask_spans need an MDM run"),
        (("--energy_run", "x"), "energy_run: MDM-only"),
    ],
)
def test_cli_rejects_mdm_options_for_ar_runs_in_one_line(tiny_runs, capsys, args, match):
    import re

    code, _, err = unmask_cli(capsys, "sample", tiny_runs["ar"], *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(match, err), err


def test_cli_mdm_errors_are_one_line(tiny_runs, capsys):
    code, _, err = unmask_cli(capsys, "sample", tiny_runs["mdm"], "--mask_spans", "[9-3]")
    assert code == 2 and "mask_spans: '9-3'" in err
    code, _, err = unmask_cli(capsys, "sample", tiny_runs["mdm"], "--length", "8", "--energy_run", tiny_runs["mdm"])
    assert code == 2 and "is neither an energy run (unmask finetune energy) nor plain left-to-right AR" in err
    code, _, err = unmask_cli(capsys, "sample", tiny_runs["mdm"], "--length", "100000")
    assert code == 2 and "exceeds the model's seq_len 32" in err  # checked before anything is allocated


def test_bench_sample_reports_speed_and_quality_per_method(tiny_runs, capsys):
    from unmask.bench import bench_sample

    methods = ["low_confidence", "conv_S/4", "threshold_b32_dual", "edlm"]
    with pytest.raises(ConfigError, match="block_length=32 must divide the generation length 8"):
        bench_sample(str(tiny_runs["mdm"]), str(tiny_runs["ar"]), length=8, n=2, methods=methods)
    result = bench_sample(str(tiny_runs["mdm"]), str(tiny_runs["ar"]), length=8, n=2, methods=methods[:2] + ["edlm"])
    rows = result["methods"]
    assert list(rows) == ["ar (judge run)", "low_confidence", "conv_S/4", "edlm"]
    assert (
        rows["low_confidence"]["forward_passes_per_token"] == 1.0
        and rows["conv_S/4"]["forward_passes_per_token"] == 0.25
    )
    assert rows["edlm"]["energy_passes"] > 0
    for name, row in rows.items():  # AR counts the tokens it generated, MDM every position
        assert row["tokens_per_s"] == pytest.approx(row["generated_tokens"] / row["seconds"])
        assert name.startswith("ar") or row["generated_tokens"] == 2 * 8
    assert all(r["gen_ppl"] > 1 and r["tokens_per_s"] > 0 and 0 <= r["rep_2"] <= 1 for r in rows.values())
    assert "gen PPL" in capsys.readouterr().out


def test_ar_tokens_per_second_counts_the_tokens_generated_up_to_end_of_document():
    from unmask.bench import generated_tokens

    eod, prompt_len = 0, 1
    tokens = torch.tensor(
        [
            [eod, 5, 6, eod, eod, eod],  # stopped: 2 tokens and the end-of-document = 3; the rest is filler
            [eod, 5, 6, 7, 8, 9],  # never stopped: all 5
            [eod, eod, eod, eod, eod, eod],  # ended at once: 1
        ]
    )
    assert generated_tokens(tokens, prompt_len, eod).tolist() == [3, 5, 1]  # 9 tokens, not 3 x 5 = 15


@pytest.mark.parametrize(
    "objective, args, match",
    [
        ("ar", ("--length", str(10**12)), r"length=1000000000000: must be <= 512 \(16 windows of seq_len 32\)"),
        ("mdm", ("--length", str(10**12)), "exceeds the model's seq_len 32"),
        ("mdm", ("--prompt", "a ____ b", "--blank_length", str(10**12)), "blank_length=1000000000000: must be in"),
        ("ar", ("--n", str(10**9)), "n=1000000000: must be in"),
    ],
)
def test_huge_requests_are_refused_before_anything_is_allocated(tiny_runs, capsys, objective, args, match):
    import re
    import time

    start = time.perf_counter()
    code, _, err = unmask_cli(capsys, "sample", tiny_runs[objective], *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(match, err), err
    assert time.perf_counter() - start < 5

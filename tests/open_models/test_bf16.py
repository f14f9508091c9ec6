"""A bf16 run stays bf16 when loaded (half float32's memory) and computes what float32 computes, to bf16's precision.

Models: a LLaDA (MDM) and a Llama (AR) checkpoint imported twice, as float32 and with --dtype bfloat16, and the
tiny AR and MDM runs trained on the embedded corpus (unmask's own Llama-like Transformer) with a bf16 copy of
their weights. Tokens are real: the trained runs' validation split, and text in the imported tokenizer's words.
Run with -s to see the measured errors.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.open_models.checkpoints import WORDS, write_hf, write_llada
from tests.test_cli import assert_one_line_error, unmask
from unmask.hub import import_checkpoint
from unmask.run import Run

MAX_RELATIVE_ERROR = 0.05
MIN_TOP1_AGREEMENT = 0.90
MAX_ELBO_GAP = 0.05  # nats per token


def bf16_copy(run: Path, out: Path) -> Path:
    """A copy of the run directory whose weight files hold bf16 tensors."""
    shutil.copytree(run, out)
    for which in ("best", "last"):
        path = out / f"{which}.safetensors"
        weights = {k: v.bfloat16() for k, v in load_file(str(path)).items()}
        path.unlink()  # an import's best is a hard link to last: write a file of its own
        save_file(weights, str(path))
    return out


def text_of_words(n: int, seed: int = 0) -> str:
    g = torch.Generator().manual_seed(seed)
    return " ".join(WORDS[i] for i in torch.randint(len(WORDS), (n,), generator=g).tolist())


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, trained_runs) -> dict[str, tuple[Path, Path]]:
    """name -> (float32 run, bf16 run) of the same weights."""
    root = tmp_path_factory.mktemp("bf16")
    write_llada(root / "llada-hf")
    out = {
        "llada": tuple(
            import_checkpoint(folder=root / "llada-hf", out=root / f"llada-{d}", dtype=d)
            for d in ("float32", "bfloat16")
        )
    }
    try:
        write_hf("llama", root / "llama-hf")
    except ImportError:  # transformers (the hf extra) writes the Llama checkpoint
        pass
    else:
        out["llama"] = tuple(
            import_checkpoint(folder=root / "llama-hf", out=root / f"llama-{d}", dtype=d)
            for d in ("float32", "bfloat16")
        )
    for objective, run in trained_runs.runs.items():
        out[f"trained-{objective}"] = (Path(run), bf16_copy(Path(run), root / f"trained-{objective}-bf16"))
    return out


def real_tokens(run: Run, n: int = 8) -> torch.Tensor:
    """(n, seq_len) real token ids: the trained run's validation split, else words through the run's tokenizer."""
    T = run.model_config.seq_len
    if run.data_path is not None and run.data_path.is_dir():
        return run.data().split("val").batch(np.arange(n)).tokens[:, :T]
    ids = run.tokenizer().encode(text_of_words(n * T)).ids
    return torch.tensor(ids[: n * T]).view(n, T)


def logits_of(model, run: Run, x: torch.Tensor) -> torch.Tensor:
    """Float32 logits of the tokens the objective predicts: every position (AR), half of them masked (MDM)."""
    with torch.no_grad():
        if run.objective.decoder == "ar":
            return model(x).float().flatten(0, 1)
        masked = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.5
        return model(x.masked_fill(masked, run.special_ids.mask_id), output_mask=masked).float()


def test_a_bf16_file_loads_as_bf16_unless_a_dtype_is_asked(pairs):
    fp32, bf16 = (Run(p) for p in pairs["llada"])
    assert {p.dtype for p in bf16.load_model().parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bf16.load_model(dtype="auto").parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bf16.load_model(dtype="float32").parameters()} == {torch.float32}
    assert {p.dtype for p in bf16.load_model(dtype=torch.float32).parameters()} == {torch.float32}
    assert {p.dtype for p in fp32.load_model().parameters()} == {torch.float32}
    assert {p.dtype for p in fp32.load_model(dtype="bfloat16").parameters()} == {torch.bfloat16}
    model = bf16.load_model()
    assert model.rope.dtype == torch.float32  # the rotation table is not in the file; rotations run in float32
    bytes_of = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())  # noqa: E731
    assert 2 * bytes_of(model) == bytes_of(bf16.load_model(dtype="float32"))
    # cast from bf16 and back: the same bits
    reloaded = bf16.load_model(dtype="float32").to(torch.bfloat16)
    pairs_of = zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs_of)


def test_bad_dtypes_are_one_error_line(pairs):
    from unmask.config import ConfigError

    for bad in ("float8", "int8", torch.int64):
        with pytest.raises(ConfigError, match="choose one of auto, float32, bfloat16, float16"):
            Run(pairs["llada"][1]).load_model(dtype=bad)


@pytest.mark.parametrize("name", ["llada", "llama", "trained-mdm", "trained-ar"])
def test_bf16_logits_agree_with_float32(pairs, name):
    """The bf16 weights computing in bf16 against the float32 weights they were rounded from, in float32."""
    if name not in pairs:
        pytest.skip("needs transformers (the hf extra) to write the Llama checkpoint")
    fp32, bf16 = (Run(p) for p in pairs[name])
    x = real_tokens(fp32)
    reference = logits_of(fp32.load_model(), fp32, x)
    model = bf16.load_model()
    logits = logits_of(model, bf16, x)
    error = float((logits - reference).norm() / reference.norm())
    agree = float((logits.argmax(-1) == reference.argmax(-1)).double().mean())
    print(f"\n{name} ({bf16.objective.name}): relative logit error {error:.4f}, top-1 agreement {agree:.3f} "
          f"over {len(reference)} positions")  # fmt: skip
    assert model(x[:1]).dtype == torch.bfloat16
    assert error < MAX_RELATIVE_ERROR and agree >= MIN_TOP1_AGREEMENT


def test_bf16_elbo_and_nll_match_float32(pairs):
    """The validation ELBO (MDM) and NLL (AR) of the bf16 copy, computed in bf16 with float32 losses, within
    MAX_ELBO_GAP nats of the float32 run's (the same MC noise: the same seed)."""
    from unmask.evaluation.likelihood import run_validation
    from unmask.objectives.mdm import elbo_pass_sums

    for name in ("trained-mdm", "trained-ar"):
        fp32, bf16 = (Run(p) for p in pairs[name])
        ref, _ = run_validation(run=fp32, model=fp32.load_model(), mc_passes=4, seed=0)
        model = bf16.load_model()
        got, _ = run_validation(run=bf16, model=model, mc_passes=4, seed=0)
        print(f"\n{name}: validation {got.kind} float32 {ref.loss:.5f}, bf16 {got.loss:.5f}, "
              f"gap {abs(got.loss - ref.loss):.5f} nats")  # fmt: skip
        assert abs(got.loss - ref.loss) < MAX_ELBO_GAP
    mdm = Run(pairs["trained-mdm"][1])
    batch = mdm.data().split("val").batch(np.arange(2)).tokens
    g = torch.Generator().manual_seed(0)
    sums = elbo_pass_sums(model=mdm.load_model(), batches=[batch], passes=2, generator=g, sp=mdm.specials)
    assert sums.dtype == torch.float32  # bf16 logits, float32 cross-entropy and sums


def test_sample_and_eval_in_bf16_from_the_command_line(pairs, capsys, tmp_path):
    text = tmp_path / "valid.txt"
    text.write_text(text_of_words(200))
    for name in ("llada", "llama"):
        if name not in pairs:
            continue
        run = pairs[name][0]  # a float32 run, computed in bf16
        code, out, err = unmask(capsys, "sample", run, "--prompt", "the a of", "--length", "6", "--dtype", "bfloat16",
                                "--device", "cpu", "--json", "true")  # fmt: skip
        assert code == 0, err
        code, out, err = unmask(capsys, "eval", run, "--text", text, "--mc_passes", "2", "--dtype", "bfloat16",
                                "--device", "cpu", "--json", "true")  # fmt: skip
        assert code == 0, err
        assert '"loss"' in out
    code, _, err = unmask(capsys, "sample", pairs["llada"][1], "--dtype", "auto", "--length", "4", "--device", "cpu")
    assert code == 0, err


@pytest.mark.parametrize("command", ["sample", "eval", "serve"])
def test_an_unknown_dtype_is_one_error_line(pairs, capsys, command):
    code, _, err = unmask(capsys, command, pairs["llada"][1], "--dtype", "float8")
    assert code == 2
    assert_one_line_error(code, err, "dtype='float8'", "auto", "bfloat16")


def test_serve_loads_in_the_configured_dtype(pairs):
    from unmask.serve.config import ServeConfig
    from unmask.serve.engine import load_models

    bf16 = str(pairs["llada"][1])
    assert next(load_models(paths=[bf16])[Path(bf16).name].net.parameters()).dtype == torch.bfloat16
    cfg = ServeConfig(dtype="float32")
    loaded = load_models(paths=[bf16], which=cfg.which, dtype=cfg.dtype)
    assert next(loaded[Path(bf16).name].net.parameters()).dtype == torch.float32

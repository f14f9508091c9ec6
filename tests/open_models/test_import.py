"""Open checkpoints imported as unmask runs give the logits of their reference forward; export then import is
bitwise; an exported AR run loads in transformers with equal logits."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.open_models.checkpoints import LLADA_CONFIG, VOCAB, llada_reference, write_hf, write_llada
from unmask.config import ConfigError
from unmask.hub import export_run, import_checkpoint
from unmask.run import Run

IDS = torch.tensor([[3, 7, 1, 12, 5, 9, 22, 4], [2, 2, 8, 15, 3, 11, 6, 1]])
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}  # fmt: skip
AR_CASES = {
    "llama": ("llama", {}),
    "llama-tied-mha": ("llama", {"tie_word_embeddings": True, "num_key_value_heads": 4}),
    "llama3-rope-scaling": ("llama", {"rope_scaling": LLAMA3}),
    "qwen2": ("qwen2", {}),
    "gpt2": ("gpt2", {}),
}


@pytest.mark.parametrize("case", sorted(AR_CASES))
def test_ar_import_matches_transformers(tmp_path, case):
    pytest.importorskip("transformers")
    kind, overrides = AR_CASES[case]
    reference = write_hf(kind, tmp_path / "hf", **overrides)
    run = Run(import_checkpoint(tmp_path / "hf", tmp_path / "run"))
    assert run.objective.name == "ar" and run.model_config.causal
    with torch.no_grad():
        expected, got = reference(IDS).logits, run.load_model()(IDS)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_sharded_checkpoint_imports(tmp_path):
    pytest.importorskip("transformers")
    reference = write_hf("llama", tmp_path / "hf", max_shard_size="20KB")
    assert len(list((tmp_path / "hf").glob("model-*.safetensors"))) > 1
    run = Run(import_checkpoint(tmp_path / "hf", tmp_path / "run"))
    with torch.no_grad():
        torch.testing.assert_close(run.load_model()(IDS), reference(IDS).logits, atol=1e-5, rtol=1e-5)


def test_llada_import_matches_its_published_forward(tmp_path):
    weights = write_llada(tmp_path / "hf")
    run = Run(import_checkpoint(tmp_path / "hf", tmp_path / "run", kind="llada"))
    assert run.objective.name == "mdm" and not run.model_config.causal
    assert run.special_ids.mask_id == LLADA_CONFIG["mask_token_id"]  # the mask it was trained with, not a new one
    with torch.no_grad():
        torch.testing.assert_close(
            run.load_model()(IDS), llada_reference(weights, LLADA_CONFIG, IDS), atol=1e-5, rtol=1e-5
        )


def test_llada_gqa_import_matches(tmp_path):
    cfg = {**LLADA_CONFIG, "n_kv_heads": 2}
    weights = write_llada(tmp_path / "hf", cfg)
    run = Run(import_checkpoint(tmp_path / "hf", tmp_path / "run"))
    with torch.no_grad():
        torch.testing.assert_close(run.load_model()(IDS), llada_reference(weights, cfg, IDS), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2", "llada"])
def test_export_then_import_is_bitwise(tmp_path, kind):
    if kind == "llada":
        write_llada(tmp_path / "hf")
    else:
        pytest.importorskip("transformers")
        write_hf(kind, tmp_path / "hf")
    first = import_checkpoint(tmp_path / "hf", tmp_path / "run")
    export_run(first, tmp_path / "exported")
    again = import_checkpoint(tmp_path / "exported", tmp_path / "again")
    a, b = load_file(first / "last.safetensors"), load_file(again / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert Run(first).model_config == Run(again).model_config
    assert Run(first).special_ids == Run(again).special_ids


def test_llada_export_is_its_published_layout(tmp_path):
    weights = write_llada(tmp_path / "hf")
    export_run(import_checkpoint(tmp_path / "hf", tmp_path / "run"), tmp_path / "exported")
    exported = load_file(tmp_path / "exported" / "model.safetensors")
    assert exported.keys() == weights.keys() and all(torch.equal(exported[k], weights[k]) for k in weights)


def native_run(tmp_path, objective: str):
    """An unmask model of the default architecture (tied, RMSNorm 1e-6, SwiGLU 8/3) as a run directory."""
    from tests.open_models.checkpoints import write_tokenizer
    from unmask.config import ModelConfig
    from unmask.hub.convert import write_run_files
    from unmask.model import Transformer, save_model

    out = tmp_path / f"native-{objective}"
    out.mkdir()
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, d_model=32, n_head=4, vocab_size=VOCAB, seq_len=64, causal=objective == "ar")
    model = Transformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_model(model, out / "last.safetensors")
    write_tokenizer(out)
    write_run_files(out, cfg, objective, {"eod_id": 1, "mask_id": VOCAB - 2, "pad_id": VOCAB - 1}, {})
    return out, model.eval()


def test_exported_unmask_ar_run_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    run, model = native_run(tmp_path, "ar")
    export_run(run, tmp_path / "hf")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(loaded).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, model(IDS), atol=1e-5, rtol=1e-5)


def test_exported_unmask_mdm_run_is_llada(tmp_path):
    run, model = native_run(tmp_path, "mdm")
    export_run(run, tmp_path / "hf")
    import json

    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    assert cfg["mask_token_id"] == VOCAB - 2
    # tied embeddings: LLaDA's weight_tying reads the output head from wte
    weights["model.transformer.ff_out.weight"] = weights["model.transformer.wte.weight"]
    with torch.no_grad():
        torch.testing.assert_close(llada_reference(weights, cfg, IDS), model(IDS), atol=1e-5, rtol=1e-5)


def test_dream_import_matches_qwen2_read_bidirectionally_and_shifted(tmp_path):
    pytest.importorskip("transformers")
    from tests.open_models.checkpoints import dream_reference, write_dream

    reference = write_dream(tmp_path / "hf")
    run = Run(import_checkpoint(tmp_path / "hf", tmp_path / "run"))  # detected from model_type "Dream"
    assert run.objective.name == "mdm" and run.model_config.shift_logits and run.special_ids.mask_id == VOCAB - 3
    with torch.no_grad():
        expected = dream_reference(reference, IDS)
        torch.testing.assert_close(run.load_model()(IDS), expected, atol=1e-5, rtol=1e-5)
        masked = torch.zeros_like(IDS, dtype=torch.bool)
        masked[:, [0, 3, 7]] = True  # token 0 reads its own position, the others the one before
        torch.testing.assert_close(run.load_model()(IDS, output_mask=masked), expected[masked], atol=1e-5, rtol=1e-5)
    back = export_run(tmp_path / "run", tmp_path / "exported")
    assert json.loads((back / "config.json").read_text())["model_type"] == "Dream"
    original, exported = load_file(tmp_path / "hf" / "model.safetensors"), load_file(back / "model.safetensors")
    assert original.keys() == exported.keys() and all(torch.equal(original[k], exported[k]) for k in original)


def test_a_dream_run_refuses_a_kv_cache_in_one_line(tmp_path):
    pytest.importorskip("transformers")
    from tests.open_models.checkpoints import write_dream

    write_dream(tmp_path / "hf")
    model = Run(import_checkpoint(tmp_path / "hf", tmp_path / "run")).load_model()
    _, kv = model(IDS[:, :4], return_kv=True)
    with pytest.raises(ConfigError, match="decodes without a KV cache; pass --sampler.cache.kv none"):
        model(IDS[:, 4:], past_kv=kv)

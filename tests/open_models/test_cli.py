"""`unmask import` / `unmask export` through the command line: imported runs sample (AR decoding, an MDM
sampler with a cache), and each damaged folder of a generated catalogue is one clear error line (exit 2)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.open_models.checkpoints import LLADA_CONFIG, write_hf, write_llada, write_tokenizer
from tests.test_cli import assert_one_line_error, unmask


def test_import_sample_export_llada(capsys, tmp_path):
    write_llada(tmp_path / "hf")
    code, out, err = unmask(capsys, "import", tmp_path / "hf", "--out", tmp_path / "run", "--as", "llada")
    assert code == 0, err
    cached = ["--sampler.commit.block_length", "4", "--sampler.cache.kv", "prefix", "--device", "cpu"]
    code, out, err = unmask(capsys, "sample", tmp_path / "run", "--prompt", "the a of", "--length", "8", *cached)
    assert code == 0, err
    code, _, err = unmask(capsys, "export", tmp_path / "run", "--out", tmp_path / "exported")
    assert code == 0 and (tmp_path / "exported" / "model.safetensors").is_file(), err


def test_import_and_sample_ar(capsys, tmp_path):
    pytest.importorskip("transformers")
    write_hf("qwen2", tmp_path / "hf")
    assert unmask(capsys, "import", tmp_path / "hf", "--out", tmp_path / "run")[0] == 0
    code, out, err = unmask(capsys, "sample", tmp_path / "run", "--prompt", "the a", "--length", "6", "--device", "cpu")
    assert code == 0, err


def damage_missing_shard(folder):
    write_llada(folder)
    index = {"metadata": {}, "weight_map": {"model.transformer.wte.weight": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "model.safetensors").unlink()
    return "model-00002-of-00002.safetensors is missing"


def damage_wrong_shape(folder):
    write_llada(folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "mlp_hidden_size": 64}))
    return "config.json implies"


def damage_unknown_architecture(folder):
    write_llada(folder)
    (folder / "config.json").write_text(json.dumps({"architectures": ["MambaForCausalLM"], "model_type": "mamba"}))
    return "model_type 'mamba'"


def damage_truncated_safetensors(folder):
    write_llada(folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    return "is not readable safetensors"


def damage_tokenizer_mismatch(folder):
    write_llada(folder)
    write_tokenizer(folder, extra=tuple(f"<extra_{i}>" for i in range(LLADA_CONFIG["vocab_size"])))
    return "another model's tokenizer"


def damage_missing_tensor(folder):
    from safetensors.torch import load_file, save_file

    write_llada(folder)
    weights = load_file(folder / "model.safetensors")
    del weights["model.transformer.blocks.1.up_proj.weight"]
    save_file(weights, str(folder / "model.safetensors"))
    return "lacks tensor model.transformer.blocks.1.up_proj.weight"


def damage_no_mask_id(folder):
    write_llada(folder)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["mask_token_id"]
    (folder / "config.json").write_text(json.dumps(cfg))
    return "pass --mask_id"


def damage_absurd_depth(folder):
    write_llada(folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "n_layers": 10**7}))  # building it would hang
    return "model.n_layer=10000000: must be <= 1024"


def damage_no_config(folder):
    write_llada(folder)
    (folder / "config.json").unlink()
    return "config.json is missing"


CATALOGUE = {name.removeprefix("damage_"): fn for name, fn in globals().items() if name.startswith("damage_")}


@pytest.mark.parametrize("damage", sorted(CATALOGUE))
def test_damaged_folder_is_one_clear_line(capsys, tmp_path, damage):
    expected = CATALOGUE[damage](tmp_path / "hf")
    code, _, err = unmask(capsys, "import", tmp_path / "hf", "--out", tmp_path / "run")
    assert code == 2
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "run" / "config.json").exists()  # no half-made run


def test_import_refuses_a_used_out_folder(capsys, tmp_path):
    write_llada(tmp_path / "hf")
    (tmp_path / "run").mkdir()
    shutil.copy(tmp_path / "hf" / "config.json", tmp_path / "run")
    code, _, err = unmask(capsys, "import", tmp_path / "hf", "--out", tmp_path / "run")
    assert_one_line_error(code, err, "already exists and is not empty")

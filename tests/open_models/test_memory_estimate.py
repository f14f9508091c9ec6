"""`unmask bench memory --checkpoint`: an import's and a run's memory, estimated from the folder's headers alone.
(benchmarks/import_memory.py checks the estimate against measured peaks on a 1B-class checkpoint.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from tests.open_models.checkpoints import LLADA_CONFIG, write_llada, write_sparse, write_tokenizer
from tests.open_models.test_cli import CATALOGUE
from tests.test_cli import assert_one_line_error, unmask
from unmask import cli
from unmask.hub import import_checkpoint
from unmask.hub.memory import estimate_checkpoint_memory


def data_bytes(path: Path) -> int:
    with safe_open(str(path), "pt") as f:
        return sum(f.get_tensor(k).nbytes for k in f.keys())  # noqa: SIM118


def test_the_estimate_counts_the_run_the_import_writes_and_the_casts_of_using_it(tmp_path):
    write_llada(tmp_path / "hf")  # float32
    m = estimate_checkpoint_memory(tmp_path / "hf")
    import_checkpoint(tmp_path / "hf", tmp_path / "run")
    assert m.file_bytes == data_bytes(tmp_path / "hf" / "model.safetensors")
    assert m.run_bytes == data_bytes(tmp_path / "run" / "last.safetensors")
    assert m.parameters * 4 == m.run_bytes and m.layout == "llada"
    # at these shapes a fused projection (sources and their concatenation) holds more than the embedding alone
    assert m.largest_tensor.endswith(("qkv.weight", "gate_up.weight")), m.largest_tensor
    assert m.import_peak > m.baseline > 0
    assert m.load_peak["float32"] == m.baseline + m.run_bytes  # the file's own dtype: no copy
    assert m.load_peak["bfloat16"] == m.baseline + m.run_bytes + m.run_bytes // 2  # mapped pages + the cast


def test_a_sparse_folder_of_llada_8b_shapes_is_estimated_without_reading_its_16_gb(tmp_path):
    D, H, V = 4096, 12288, 126464
    cfg = {**LLADA_CONFIG, "d_model": D, "n_heads": 32, "n_kv_heads": 32, "n_layers": 32, "mlp_hidden_size": H,
           "vocab_size": V, "embedding_size": V, "mask_token_id": 126336}  # fmt: skip
    shapes = {"model.transformer.wte.weight": (V, D), "model.transformer.ln_f.weight": (D,),
              "model.transformer.ff_out.weight": (V, D)}  # fmt: skip
    for i in range(32):
        block = {"attn_norm": (D,), "ff_norm": (D,), "q_proj": (D, D), "k_proj": (D, D), "v_proj": (D, D),
                 "attn_out": (D, D), "ff_proj": (H, D), "up_proj": (H, D), "ff_out": (D, H)}  # fmt: skip
        shapes |= {f"model.transformer.blocks.{i}.{k}.weight": s for k, s in block.items()}
    (tmp_path / "hf").mkdir()
    write_sparse(tmp_path / "hf" / "model.safetensors", shapes)
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    write_tokenizer(tmp_path / "hf")
    m = estimate_checkpoint_memory(tmp_path / "hf")
    assert 8.0e9 < m.parameters < 8.1e9 and m.file_bytes == 2 * m.parameters == m.run_bytes
    gib = 2**30
    assert m.largest_tensor == "embed.weight"  # a tensor at a time: the 1 GiB embedding, written from the map
    assert m.import_peak - m.baseline - m.tokenizer == 2 * V * D < 1.5 * gib
    assert m.load_peak["bfloat16"] - m.baseline == m.file_bytes  # ~15 GiB: bf16 stays bf16
    assert m.load_peak["float32"] - m.baseline == 3 * m.file_bytes


def test_the_cli_prints_the_estimate_and_writes_it_as_json(tmp_path, capsys):
    write_llada(tmp_path / "hf")
    out = tmp_path / "memory.json"
    assert cli.main(["bench", "memory", "--checkpoint", str(tmp_path / "hf"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "unmask import" in text and "using the run in bfloat16" in text and "llada layout" in text
    result = json.loads(out.read_text())
    assert result["import_peak"] > result["baseline"] and set(result["load_peak"]) == {"float32", "bfloat16"}


@pytest.mark.parametrize("damage", sorted(CATALOGUE))
def test_a_damaged_folder_is_the_same_one_line_as_its_import(tmp_path, capsys, damage):
    expected = CATALOGUE[damage](tmp_path / "hf")
    code, _, err = unmask(capsys, "bench", "memory", "--checkpoint", tmp_path / "hf")
    assert_one_line_error(code, err, expected)

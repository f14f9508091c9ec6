"""`unmask import` and `unmask export`: open checkpoints (a Hugging Face-format folder) to unmask run
directories and back.

An imported run is a run directory like any other (see unmask.run): config.json with the model and an
objective (ar, or mdm for LLaDA), the special ids, tokenizer.json, last.safetensors (best.safetensors the same
file), budget and provenance; it records where it came from and holds no training data or metrics.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch

from unmask.checkpoint import atomic_write_text, provenance, sha256_of
from unmask.config import ConfigError, ModelConfig, TrainConfig, to_dict
from unmask.hub.files import DTYPES, Shards, read_json, stream, write_streamed
from unmask.hub.layouts import LAYOUTS, Layout, Piece
from unmask.model import Transformer, count_params

KINDS = {"ar": ("llama", "qwen2", "gpt2"), "llada": ("llada",), "dream": ("dream",)}
"""--as: the layouts each kind of import accepts."""
LLADA_MASK = "<|mdm_mask|>"
"""The mask token of LLaDA's tokenizer (id 126336 in LLaDA-8B)."""
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def detect_layout(hf: dict, folder: Path, kind: str | None) -> Layout:
    """The layout of config.json's model_type (its `architectures` named in the error), checked against --as."""
    model_type = hf.get("model_type")
    name = model_type.lower() if isinstance(model_type, str) else None
    supported = "llama, qwen2, gpt2 (--as ar), llada (--as llada) and dream (--as dream)"
    if name not in LAYOUTS:
        raise ConfigError(
            f"{folder / 'config.json'}: model_type {model_type!r} (architectures {hf.get('architectures')}) is not "
            f"a layout unmask imports; supported: {supported}"
        )
    if kind is not None and name not in KINDS[kind]:
        raise ConfigError(f"{folder}: --as {kind} does not fit model_type {name!r}; drop --as or pass the right one")
    return LAYOUTS[name]


def import_checkpoint(
    folder: str | Path,
    out: str | Path,
    kind: str | None = None,
    mask_id: int | None = None,
    pad_id: int | None = None,
    dtype: str | None = None,
) -> Path:
    """Turn the Hugging Face-format folder into the unmask run directory `out`, one tensor at a time."""
    folder, out = Path(folder), Path(out)
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"--as {kind!r}: choose one of {', '.join(KINDS)}")
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPE_NAMES)} (default: the checkpoint's)")
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; pass a Hugging Face-format checkpoint folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} already exists and is not empty; choose a new folder")
    plan = plan_import(folder, kind, dtype)
    try:
        tok, specials = import_tokenizer(folder, plan.hf, plan.cfg, plan.layout, mask_id, pad_id)
        out.mkdir(parents=True, exist_ok=True)
        recipes = {
            p.unmask: _joiner(plan.shards, p, dt) for p, (_, _, dt) in zip(plan.pieces, plan.entries, strict=True)
        }
        write_streamed(out / "last.safetensors", plan.entries, stream(recipes, plan.shards.release), {"format": "pt"})
    finally:
        plan.shards.close()
    _link_or_copy(out / "last.safetensors", out / "best.safetensors")
    tok.save(str(out / "tokenizer.json"))
    origin = {
        "folder": str(folder.resolve()),
        "layout": plan.layout.name,
        "architectures": plan.hf.get("architectures"),
    }
    write_run_files(out, plan.cfg, plan.layout.objective, specials, origin)
    return out


@dataclasses.dataclass
class ImportPlan:
    """What importing a folder will write, read from config.json and the shards' headers (no tensor data)."""

    hf: dict
    layout: Layout
    cfg: ModelConfig
    shards: Shards
    """Open (memory-mapped, nothing read yet): the caller closes them."""
    pieces: list[Piece]
    entries: list[tuple[str, list[int], torch.dtype]]
    """Per unmask tensor, in the model's order: name, shape and the dtype it is written in."""


def plan_import(folder: Path, kind: str | None, dtype: str | None) -> ImportPlan:
    """The layout, model config and tensor plan of a checkpoint folder, every shape checked against config.json."""
    hf = read_json(folder / "config.json", "not a Hugging Face-format checkpoint folder")
    layout = detect_layout(hf, folder, kind)
    try:
        cfg = layout.model_config(hf)
    except ConfigError as e:
        raise ConfigError(str(e) if str(folder) in str(e) else f"{folder / 'config.json'}: {e}") from None
    shards = Shards(folder)
    try:
        meta = meta_state(cfg)
        pieces = sorted(layout.pieces(cfg), key=lambda p: list(meta).index(p.unmask))  # the model's own order
        assert [p.unmask for p in pieces] == list(meta), f"the {layout.name} layout must cover every unmask tensor"
        check_shapes(shards, pieces, meta, folder)
        entries = [(p.unmask, list(meta[p.unmask].shape), _dtype(shards, p, dtype)) for p in pieces]
    except BaseException:
        shards.close()
        raise
    return ImportPlan(hf, layout, cfg, shards, pieces, entries)


def meta_state(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The model's tensors on the meta device: names and shapes, no memory."""
    with torch.device("meta"):
        return Transformer(cfg).state_dict()


def check_shapes(shards: Shards, pieces: list[Piece], meta: dict[str, torch.Tensor], folder: Path) -> None:
    """Every tensor the layout needs is there with the shape config.json implies (the split of the meta model)."""
    for piece in pieces:
        for name, expected in zip(piece.hf, piece.split(meta[piece.unmask]), strict=True):
            got = shards.shape(name)
            if got != list(expected.shape):
                raise ConfigError(
                    f"{folder}: tensor {name} has shape {got} but config.json implies {list(expected.shape)}; "
                    f"the weights and config.json belong to different models"
                )


def _dtype(shards: Shards, piece: Piece, wanted: str | None) -> torch.dtype:
    if wanted is not None:
        return DTYPE_NAMES[wanted]
    name = piece.hf[0]
    found = shards.dtype(name)
    if found not in DTYPES:
        raise ConfigError(f"{shards.folder}: tensor {name} is {found}; unmask imports float weights only")
    return found


def _joiner(shards: Shards, piece: Piece, dtype: torch.dtype):
    return lambda: piece.join([shards.get(n) for n in piece.hf]).to(dtype)


def import_tokenizer(folder: Path, hf: dict, cfg: ModelConfig, layout: Layout, mask_id, pad_id):
    """The checkpoint's tokenizer (with unmask's <|mask|> and <|pad|> appended if it lacks them) and the
    special ids: end-of-text from config.json, the mask and padding ids from the options, config.json, LLaDA's
    <|mdm_mask|>, or else the appended tokens, which need spare embedding rows."""
    from tokenizers import Tokenizer

    from unmask.data.tokenizer import load_tokenizer, special_ids

    path = folder / "tokenizer.json"
    try:
        original = Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True) if path.is_file() else None
    except Exception:  # noqa: BLE001  (load_tokenizer below names the problem in one line)
        original = None
    if original is not None and original > cfg.vocab_size:
        raise ConfigError(
            f"{path} has {original} tokens but the checkpoint's embedding has {cfg.vocab_size} rows: it is another "
            f"model's tokenizer; copy the checkpoint's own tokenizer.json"
        )
    tok = load_tokenizer(path)
    size, ids = tok.get_vocab_size(with_added_tokens=True), special_ids(tok)
    if size > cfg.vocab_size and (mask_id is None or pad_id is None):
        raise ConfigError(
            f"{folder}: the embedding has no spare rows for unmask's <|mask|> and <|pad|> tokens ({cfg.vocab_size} "
            f"rows, {original} tokens); this checkpoint cannot be imported without them"
        )
    eod = _first_int(hf.get("eos_token_id"))
    mask_id = _first_int(hf.get("mask_token_id")) if mask_id is None else mask_id
    if mask_id is None and tok.token_to_id(LLADA_MASK) is not None:
        mask_id = tok.token_to_id(LLADA_MASK)
    if mask_id is None and layout.objective == "mdm":
        raise ConfigError(
            f"{folder}: neither config.json (mask_token_id) nor tokenizer.json ({LLADA_MASK}) names the mask token "
            f"this MDM was trained with; pass --mask_id (LLaDA-8B: 126336)"
        )
    specials = {
        "eod_id": ids.eod_id if eod is None else eod,
        "mask_id": ids.mask_id if mask_id is None else mask_id,
        "pad_id": ids.pad_id if pad_id is None else pad_id,
    }
    values = list(specials.values())
    if len(set(values)) != 3 or not all(0 <= i < cfg.vocab_size for i in values):
        raise ConfigError(
            f"{folder}: special ids {specials} must be three different ids below the vocabulary size "
            f"{cfg.vocab_size}; pass --mask_id / --pad_id"
        )
    return tok, specials


def _first_int(value) -> int | None:
    value = value[0] if isinstance(value, list) and value else value
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def write_run_files(out: Path, cfg: ModelConfig, objective: str, specials: dict, origin: dict) -> None:
    """The run directory's JSON files (unmask.run's layout); config.json last: with it the run is complete."""
    atomic_write_text(out / "model_config.json", json.dumps(to_dict(cfg), indent=2))
    atomic_write_text(out / "budget.json", json.dumps({"params": count_params(cfg), "imported": True}, indent=2))
    atomic_write_text(out / "provenance.json", json.dumps({**provenance(), "imported_from": origin}, indent=2))
    (out / "metrics.jsonl").touch()
    config = {
        "model": to_dict(cfg),
        "train": to_dict(TrainConfig(objective=objective)),
        "specials": specials,
        "tokenizer_sha256": sha256_of(out / "tokenizer.json"),
        "imported_from": origin,
    }
    atomic_write_text(out / "config.json", json.dumps(config, indent=2))


def _link_or_copy(source: Path, target: Path) -> None:
    """best = last for an imported run: a hard link where the file system allows (no second copy on disk)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


# ---- export --------------------------------------------------------------------------------------------------

KEEP_ON_EXPORT = ("size", "dropout", "init_std")
"""ModelConfig fields that do not change a forward pass: a layout need not express them."""


def export_layout(run) -> Layout:
    """The published layout that expresses the run's model exactly: LLaDA for an MDM (Dream with shifted logits);
    GPT-2 (learned positions),
    Qwen2 (q/k/v biases) or Llama for an AR run."""
    cfg, objective = run.model_config, run.objective
    if objective.decoder == "mdm" and not objective.energy:
        layout = LAYOUTS["dream" if cfg.shift_logits else "llada"]
    elif objective.causal and not objective.query_is_target:
        layout = LAYOUTS["gpt2" if cfg.positions == "learned" else "qwen2" if cfg.qkv_bias else "llama"]
    else:
        raise ConfigError(f"run {run.path} is a {objective.name} run; unmask exports ar and mdm runs")
    # what the layout expresses: the run's config written as config.json and read back (widths resolved)
    resolved = lambda c: dataclasses.replace(c, d_mlp=c.mlp_width, n_kv_head=c.kv_heads)  # noqa: E731
    mine, round_trip = resolved(cfg), resolved(layout.model_config(layout.hf_config(cfg, _specials(run))))
    differ = [
        f"model.{f.name}={getattr(cfg, f.name)!r}"
        for f in dataclasses.fields(ModelConfig)
        if f.name not in KEEP_ON_EXPORT and getattr(round_trip, f.name) != getattr(mine, f.name)
    ]
    if differ:
        raise ConfigError(f"run {run.path} has {', '.join(differ)}, which the {layout.name} layout cannot express")
    return layout


def export_run(run_path: str | Path, out: str | Path, which: str = "last") -> Path:
    """Write the run as a Hugging Face-format folder: config.json, model.safetensors, tokenizer.json."""
    from safetensors import safe_open

    from unmask.run import Run

    run, out = Run(run_path), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} already exists and is not empty; choose a new folder")
    layout, cfg = export_layout(run), run.model_config
    pieces = layout.pieces(cfg)
    weights = run.weights(which)
    with safe_open(str(weights), framework="pt", device="cpu") as f:
        missing = [p.unmask for p in pieces if p.unmask not in f.keys()]
        if missing:
            raise ConfigError(f"{weights} lacks {missing[0]}: it does not match the run's config; it is damaged")
        out.mkdir(parents=True, exist_ok=True)
        entries, recipes = [], {}
        for piece in pieces:
            shape, dtype = f.get_slice(piece.unmask).get_shape(), _safetensors_dtype(f, piece.unmask)
            meta_parts = piece.split(torch.empty(shape, dtype=dtype, device="meta"))  # the shapes, no memory
            for i, (name, part) in enumerate(zip(piece.hf, meta_parts, strict=True)):
                entries.append((name, list(part.shape), part.dtype))
                recipes[name] = lambda p=piece, i=i: p.split(f.get_tensor(p.unmask))[i]
        write_streamed(out / "model.safetensors", entries, stream(recipes), {"format": "pt"})
    dtype = next(str(d).removeprefix("torch.") for _, _, d in entries)
    hf = {**layout.hf_config(cfg, _specials(run)), "torch_dtype": dtype}
    atomic_write_text(out / "config.json", json.dumps(hf, indent=2))
    shutil.copyfile(run.path / "tokenizer.json", out / "tokenizer.json")
    return out


def _specials(run) -> dict:
    ids = run.special_ids
    return {"eod_id": ids.eod_id, "mask_id": ids.mask_id, "pad_id": ids.pad_id}


def _safetensors_dtype(f, name: str) -> torch.dtype:
    return {v: k for k, v in DTYPES.items()}[f.get_slice(name).get_dtype()]

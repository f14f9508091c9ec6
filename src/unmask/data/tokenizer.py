"""Byte-level BPE tokenizer (Hugging Face `tokenizers`) with the special tokens
unmask needs: end-of-document, mask and padding.

Special tokens are never produced from real text: `encode_special_tokens` makes
a literal "<|mask|>" in a document tokenise as ordinary bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from unmask.config import ConfigError

EOD, MASK, PAD = "<|endoftext|>", "<|mask|>", "<|pad|>"
EOD_ALIASES = (EOD, "</s>", "<|eot_id|>", "<eos>", "[SEP]")


@dataclass(frozen=True)
class SpecialIds:
    eod_id: int
    mask_id: int
    pad_id: int


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOD, MASK, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.encode_special_tokens = True
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer.json, adding mask (and pad / end-of-document) tokens it lacks."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"tokenizer {path} does not exist; pass a tokenizer.json (data.tokenizer)")
    if not path.is_file():
        raise ConfigError(f"tokenizer {path} is not a file; pass a tokenizer.json (data.tokenizer)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust error text is long (or empty); keep its first line
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{path} is not a valid tokenizer.json: {reason}") from None
    vocab = tok.get_vocab()
    missing = [t for t in (MASK, PAD) if t not in vocab]
    if not any(t in vocab for t in EOD_ALIASES):
        missing.append(EOD)
    if missing:
        tok.add_special_tokens(missing)
    tok.encode_special_tokens = True
    return tok


def special_ids(tok: Tokenizer) -> SpecialIds:
    vocab = tok.get_vocab()
    eod = next(vocab[t] for t in EOD_ALIASES if t in vocab)
    return SpecialIds(eod_id=eod, mask_id=vocab[MASK], pad_id=vocab[PAD])


def model_vocab_size(tok: Tokenizer) -> int:
    """Embedding rows: the tokenizer's size rounded up to a multiple of 64 (fast matmuls)."""
    return 64 * -(-tok.get_vocab_size(with_added_tokens=True) // 64)

"""Data: corpus readers, tokenizer, budgeted token shards, sequence loading."""

from unmask.data.batch import Batch
from unmask.data.dataset import Sequences, TokenData
from unmask.data.prepare import prepare

__all__ = ["Batch", "Sequences", "TokenData", "prepare"]

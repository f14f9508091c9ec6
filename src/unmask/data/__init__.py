"""Data: corpus readers, tokenizer, budgeted token shards, sequence loading."""

from unmask.data.dataset import TokenData
from unmask.data.prepare import prepare

__all__ = ["TokenData", "prepare"]

"""The batch every loader yields and every objective takes: token ids, and for conversations what is learned.

Torch is needed only by whoever builds one (its tensors), so importing this module stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Batch:
    tokens: torch.Tensor  # (B, T) int64
    """Token ids, right-padded with pad_id."""
    loss_mask: torch.Tensor | None = None  # (B, T) bool
    """The positions that are learned (a conversation's assistant text and its end-of-text; see
    unmask.data.instructions); None for plain sequences, whose every real token counts."""

    def __len__(self) -> int:
        return len(self.tokens)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """The batch with `fn` applied to each tensor (a device move, pinning)."""
        return Batch(fn(self.tokens), None if self.loss_mask is None else fn(self.loss_mask))

    def to(self, device: torch.device | str) -> Batch:
        return self.map(lambda t: t.to(device))

    def split(self, size: int) -> list[Batch]:
        """Micro-batches of `size` rows (the last one may be shorter): views, no copy."""
        if self.loss_mask is None:
            return [Batch(t) for t in self.tokens.split(size)]
        return [Batch(t, m) for t, m in zip(self.tokens.split(size), self.loss_mask.split(size), strict=True)]

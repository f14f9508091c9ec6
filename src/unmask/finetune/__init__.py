"""Fine-tuning: instruction data and the chat template, the shipped instruction set, and the losses of SFT,
R2FT (with its rejected continuations) and EDLM's NCE energy (the commands build on these)."""

from unmask.finetune.chat import ROLE_TOKENS, InstructionDataError, Message, encode_conversation, read_conversations
from unmask.finetune.energy import nce_loss
from unmask.finetune.r2ft import continuation_logp, high_prior_filler, r2ft_loss, repeated_phrase
from unmask.finetune.sft import ar_sft_loss, mdm_sft_loss, sft_batch
from unmask.finetune.tasks import TASKS, Example, instruction_set, score, write_instruction_set

__all__ = [
    "ROLE_TOKENS", "TASKS", "Example", "InstructionDataError", "Message", "ar_sft_loss", "continuation_logp",
    "encode_conversation", "high_prior_filler", "instruction_set", "mdm_sft_loss", "nce_loss", "r2ft_loss",
    "read_conversations", "repeated_phrase", "score", "sft_batch", "write_instruction_set",
]  # fmt: skip

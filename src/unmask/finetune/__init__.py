"""Fine-tuning: instruction data and the chat template, the shipped instruction set, the SFT losses (the
SFT command, R2FT and the EDLM energy model build on these)."""

from unmask.finetune.chat import ROLE_TOKENS, InstructionDataError, Message, encode_conversation, read_conversations
from unmask.finetune.sft import ar_sft_loss, mdm_sft_loss, sft_batch
from unmask.finetune.tasks import TASKS, Example, instruction_set, score, write_instruction_set

__all__ = [
    "ROLE_TOKENS", "TASKS", "Example", "InstructionDataError", "Message", "ar_sft_loss", "encode_conversation",
    "instruction_set", "mdm_sft_loss", "read_conversations", "score", "sft_batch", "write_instruction_set",
]  # fmt: skip

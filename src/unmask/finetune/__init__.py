"""Fine-tuning: instruction data and the chat template, the shipped instruction set (SFT, R2FT and the
EDLM energy model build on these)."""

from unmask.finetune.chat import ROLE_TOKENS, InstructionDataError, Message, encode_conversation, read_conversations
from unmask.finetune.tasks import TASKS, Example, instruction_set, score, write_instruction_set

__all__ = [
    "ROLE_TOKENS", "TASKS", "Example", "InstructionDataError", "Message", "encode_conversation", "instruction_set",
    "read_conversations", "score", "write_instruction_set",
]  # fmt: skip

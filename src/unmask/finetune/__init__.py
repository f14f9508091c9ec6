"""Fine-tuning: instruction data and the chat template, the shipped instruction set, instruction folders
for a base run, SFT and R2FT runs, and EDLM's NCE energy. The SFT and R2FT losses are objectives
(unmask.objectives.sft, unmask.objectives.r2ft), so the training loop runs them like pre-training."""

from unmask.finetune.chat import ROLE_TOKENS, InstructionDataError, Message, encode_conversation, read_conversations
from unmask.finetune.energy import nce_loss
from unmask.finetune.prepare import prepare_instructions
from unmask.finetune.tasks import TASKS, Example, instruction_set, score, write_instruction_set

__all__ = [
    "ROLE_TOKENS", "TASKS", "Example", "InstructionDataError", "Message", "encode_conversation", "instruction_set",
    "nce_loss", "prepare_instructions", "read_conversations", "score", "write_instruction_set",
]  # fmt: skip

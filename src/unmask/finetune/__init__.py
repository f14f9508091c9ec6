"""Fine-tuning: instruction data and the chat template, the shipped instruction set, instruction folders
for a base run, and the pieces of R2FT (rejected continuations, preference loss) and EDLM's NCE energy.
The SFT losses are objectives (unmask.objectives.sft), so the training loop runs them like pre-training."""

from unmask.finetune.chat import ROLE_TOKENS, InstructionDataError, Message, encode_conversation, read_conversations
from unmask.finetune.energy import nce_loss
from unmask.finetune.prepare import prepare_instructions
from unmask.finetune.r2ft import continuation_logp, high_prior_filler, r2ft_loss, repeated_phrase
from unmask.finetune.tasks import TASKS, Example, instruction_set, score, write_instruction_set

__all__ = [
    "ROLE_TOKENS", "TASKS", "Example", "InstructionDataError", "Message", "continuation_logp", "encode_conversation",
    "high_prior_filler", "instruction_set", "nce_loss", "prepare_instructions", "r2ft_loss", "read_conversations",
    "repeated_phrase", "score", "write_instruction_set",
]  # fmt: skip

"""Evaluation: validation likelihood (AR NLL, MDM ELBO)."""

from unmask.evaluation.likelihood import ValidationLoss, validation_loss

__all__ = ["ValidationLoss", "validation_loss"]

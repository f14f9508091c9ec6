"""Open checkpoints: Hugging Face-format folders (Llama, Qwen2, GPT-2, LLaDA) imported as unmask runs, and
runs exported back (see docs/open_models.md). Needs no transformers; its tests compare with it."""

from unmask.hub.convert import export_run, import_checkpoint

__all__ = ["export_run", "import_checkpoint"]

"""Instruction tuning: chat data through the corpus gates, loss on assistant tokens, full or LoRA."""

"""The corpus pipeline: licence-checked, opt-out-honouring, PII-scrubbed, deduplicated Dutch text."""

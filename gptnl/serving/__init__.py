"""The OpenAI-compatible gateway in front of vLLM: keys, scopes, limits, audit, guard, metrics."""

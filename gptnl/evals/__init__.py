"""Evaluation: tasks as data (`evals/tasks/`), OpenAI-compatible clients, metrics with bootstrap
intervals, Ray sweeps over models x tasks x settings, and reports (`gptnl eval`)."""

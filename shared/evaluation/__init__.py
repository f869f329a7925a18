"""Evaluation runs: metrics, statistics, model selection and the results they produce."""

"""Scoring: answer extraction, normalisation, per-sample protocols and caption metrics (pure functions)."""

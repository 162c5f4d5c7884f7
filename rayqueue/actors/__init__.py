"""Thin Ray shells: each actor owns one core object, a clock and the Ray plumbing."""

"""Runnable jobs (curate, train, generate, evaluate, demo) and the `alchemist` CLI."""

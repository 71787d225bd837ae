"""The engine: the sampling rule, ArS/SpS loops over cached LMs, drafters, runtimes and model loading.

Imports nothing from runs, analysis, report or distill."""

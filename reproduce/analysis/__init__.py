"""Analysis of raw results: statistics, quality metrics, the Leviathan cost model, and the HumanEval sandbox.

Pure and torch-free: it reads results files (reproduce.runs.results), never the runner or the models."""

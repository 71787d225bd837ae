"""Experiment runs: configs (YAML), the plan of units, the runner, the Hugging Face peers, and raw results files."""

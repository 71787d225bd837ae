"""The suite's own quality metrics as Hugging Face `evaluate` modules, one script each: rouge.py, pass_at_k.py,
perplexity.py. reproduce.analysis.metrics.load_metric loads them by path with `evaluate.load`, offline.

Each script is self-contained (it imports neither reproduce nor torch), because `evaluate.load` copies it
into its module cache and imports the copy from there. Nothing in a script runs model code: pass_at_k takes
the pass/fail flags that reproduce.analysis.sandbox produced in its subprocesses."""

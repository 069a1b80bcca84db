# The two commands of README.md:
#   make demo   the main job: set up, generate the built-in dataset, train DiNAT-Mini +
#               Mask2Former on it on the CPU, evaluate PQ / AP / mIoU, draw predictions
#   make test   set up (first run: virtual environment, dependencies, detectron2, native build)
#               and run the test-suite
# Also: make app (the web demo on http://127.0.0.1:7860), make bench (the NA kernels'
# benchmark table, quick shapes), make sanitize (the CUDA kernels on the emulated device under
# ThreadSanitizer / AddressSanitizer), make kernel-resources (registers, spills, shared memory
# and occupancy of every GPU kernel on sm_80 / sm_90 / sm_100, compiled without a GPU:
# docs/kernel_resources.md).
# Re-running is cheap: each step has a stamp and reruns only when its inputs change.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMPS := $(VENV)/stamps
NATIVE_SOURCES := $(wildcard native/*.cpp native/*.h native/*/*.cpp native/*/*.cu native/*/*.cuh native/*/*.h)

.PHONY: setup chromium test lint format bench sanitize kernel-resources demo app clean

setup: $(STAMPS)/native chromium

# The web demo's browser test (tests/demo/test_app.py) drives Debian's chromium package;
# installed here when missing (needs root, as CI has).
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "chromium: $(CHROMIUM) missing; installing Debian's chromium for the browser test (apt-get install -y chromium)"; \
		if [ "$$(id -u)" != 0 ]; then echo "chromium: run as root, or: sudo apt-get install -y chromium" >&2; exit 1; fi; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/deps: requirements.txt | $(PY)
	$(PIP) install -q -r requirements.txt
	mkdir -p $(STAMPS) && touch $@

# detectron2 is not on PyPI: unpack the pure-Python files of the sal-detectron2 wheel (a
# repackage of upstream main; its cp310 binary is dropped and never loaded).
$(STAMPS)/detectron2: $(STAMPS)/deps
	$(PIP) download -q --no-deps --only-binary=:all: --python-version 3.10 \
		-d .cache/wheels sal-detectron2==0.7.2
	site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
		$(PY) -m zipfile -e .cache/wheels/sal_detectron2-0.7.2-*.whl "$$site" && \
		rm -f "$$site"/detectron2/_C.*.so
	$(PY) -c 'import detectron2, detectron2.modeling; print("detectron2", detectron2.__version__)'
	touch $@

# In-place build of dinat_m2f._C (CPU kernels; CUDA kernels when a toolkit is found) and of
# the test extension dinat_m2f._C_testing (the emulated device).
$(STAMPS)/native: $(STAMPS)/detectron2 setup.py $(NATIVE_SOURCES)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	$(PY) -c 'import dinat_m2f.layers as L; assert L.native_available(), "native build missing"; print("native ops:", L.native_backends())'
	$(PY) -c 'import dinat_m2f.layers, dinat_m2f._C_testing'
	touch $@

test: setup lint
	DINAT_M2F_REQUIRE_NATIVE=1 $(PY) -m pytest -q tests

# Style: ruff (lint + format, pyproject.toml) over the Python tree, clang-format (.clang-format)
# over native/. `make format` applies both.
CXX_SOURCES = $(shell find native -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' -o -name '*.h')
lint: $(STAMPS)/deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/clang-format --dry-run -Werror $(CXX_SOURCES)

format: $(STAMPS)/deps
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	$(VENV)/bin/clang-format -i $(CXX_SOURCES)

bench: setup
	$(PY) -m dinat_m2f.benchmarks.na --quick

# The CUDA kernels on the emulated device under ThreadSanitizer and AddressSanitizer, with the
# planted bugs that must be caught (also part of make test: tests/native/).
sanitize:
	$(PYTHON) tools/sanitize.py

# Every GPU kernel (native/ .cu with nvcc, the fused Triton kernels with Triton's ptxas) compiled
# for sm_80, sm_90 and sm_100 in the launch configurations DiNAT's problems use; fails when one
# cannot launch or a forward kernel spills (a few minutes on 2 cores).
kernel-resources: setup
	$(PY) -m tools.kernel_resources --jobs 2 --markdown docs/kernel_resources.md

# --- the main job on the built-in dataset ----------------------------------------------------
DATASETS ?= datasets
DEMO_OUT ?= output/builtin_shapes
DEMO_CONFIG := configs/builtin/maskformer2_dinat_mini_builtin_shapes.yaml
# extra train_net.py KEY VALUE opts, e.g. DEMO_OPTS="SOLVER.AMP.ENABLED True
# SOLVER.AMP.PRECISION bfloat16" (mixed precision: faster on CPUs with bfloat16 units)
DEMO_OPTS ?=

# --resume: an interrupted run continues from its last checkpoint; a finished one only
# re-evaluates. Results: $(DEMO_OUT)/log.txt, inference/, metrics.json; pictures: demo/;
# training curves: plots/.
demo: setup
	$(PY) -m dinat_m2f.data.generate_builtin --root $(DATASETS)
	DETECTRON2_DATASETS=$(DATASETS) $(PY) train_net.py --config-file $(DEMO_CONFIG) --resume \
		OUTPUT_DIR $(DEMO_OUT) $(DEMO_OPTS)
	DETECTRON2_DATASETS=$(DATASETS) $(PY) demo/demo.py --config-file $(DEMO_CONFIG) \
		--input $(DATASETS)/builtin_shapes/val --output $(DEMO_OUT)/demo \
		--opts MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth
	$(PY) tools/builtin_results.py $(DEMO_OUT)
	$(PY) tools/plot_metrics.py $(DEMO_OUT)

# The web demo with the model of `make demo` (until it is trained the page says so); more
# options with APP_ARGS, e.g. make app APP_ARGS="--host 0.0.0.0 --port 8080".
APP_ARGS ?=
app: setup
	$(PY) -m dinat_m2f.data.generate_builtin --root $(DATASETS)
	DETECTRON2_DATASETS=$(DATASETS) $(PY) demo/app.py \
		--model $(DEMO_CONFIG) $(DEMO_OUT)/model_final.pth $(APP_ARGS)

clean:
	rm -rf build dinat_m2f/_C*.so $(STAMPS)/native

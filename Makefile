# The two commands of README.md:
#   make test   set up (first run: virtual environment, dependencies, detectron2, native build)
#               and run the test-suite
#   make bench  set up and print the NA kernels' benchmark table (quick shapes)
# Re-running is cheap: each step has a stamp and reruns only when its inputs change.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMPS := $(VENV)/stamps
NATIVE_SOURCES := $(wildcard native/*.cpp native/*/*.cpp native/*/*.cu native/*/*.h)

.PHONY: setup test test-fast bench clean

setup: $(STAMPS)/native

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

# In-place build of dinat_m2f._C (CPU kernels; CUDA kernels when a toolkit is found).
$(STAMPS)/native: $(STAMPS)/detectron2 setup.py $(NATIVE_SOURCES)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	$(PY) -c 'import dinat_m2f.layers as L; assert L.native_available(), "native build missing"; print("native ops:", L.native_backends())'
	touch $@

test: setup
	DINAT_M2F_REQUIRE_NATIVE=1 $(PY) -m pytest -q tests

bench: setup
	$(PY) -m dinat_m2f.benchmarks.na --quick

clean:
	rm -rf build dinat_m2f/_C*.so $(STAMPS)/native

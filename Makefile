# Two commands do all set-up on a fresh clone:
#   make demo   the main job: picks a CRF for the bundled sample clip with the default model
#   make test   the whole test suite
# Both create .venv with Python 3.12 (.python-version) and install the package first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test lint clean model

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# -qq: errors still print; setuptools' notice on every editable install of a package
	# whose top-level folders map into it (our layout) does not.
	$(BIN)/python -m pip install -qq -e '.[dev]'
	# vspipe finds this venv's Python only through VapourSynth's config file
	# (~/.config/vapoursynth/vapoursynth.toml, one entry per install).
	$(BIN)/vapoursynth config
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/cpllm-ladder pick samples/sample.mp4

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

# Rebuilds the shipped default model from nothing (data in data/recipe, ignored by git):
# corpus, ladders (libx264, x265, SVT-AV1), features, training, export, evaluation: a few
# hours on 2 CPU cores (docs/model-card.md, "What the recipe costs, by stage"). Every stage
# resumes; a training stage whose time budget is spent saves its state and stops the run:
# run it again to continue.
model: $(STAMP)
	$(BIN)/cpllm-recipe --data data/recipe

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info

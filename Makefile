# Two commands for a fresh machine with Python >= 3.11 and pip:
#   make demo   set up .venv, then train yolov4-tiny on the embedded shapes data, evaluate, detect
#   make test   set up .venv, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev,onnx,tflite,openvino,track,ray,tune]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/yolo4 train --demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/lint-imports
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q -n 2 --durations=15

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "" --durations=25

clean:
	rm -rf $(VENV) runs

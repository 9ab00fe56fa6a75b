#!/usr/bin/env bash
# The one prepared GPU check (issue 10), for a machine with an NVIDIA GPU:
#   1. the demo end to end on the GPU with the project's own commands: generate, preprocess,
#      train (5 epochs: parity and speed are checked here, not quality), evaluate,
#      export --target gpu, serve --try-sessions;
#   2. parity: the served gpu repository's answers for the test sessions against in-process
#      `Recommender` answers, whether Triton put the model on a GPU instance, and one-session
#      latency through the GPU server;
#   3. python -m bench.bench_train --skip-early-stop: training throughput at windows 50 and 200;
#   4. python -m bench.bench_serve --items 1682 --seconds 3 (it exports the cpu target: its model step runs on the CPU).
# Every step runs under `timeout`, and all of them under one budget (BUDGET_S, 450 s), so the
# whole check ends within 8 minutes; a step left without time is recorded as skipped.
# Writes bench/results/gpu_check.json (OUTPUT=...) with each step's status and seconds and the
# results, also when it stops early; step logs are in bench/work/gpu_check/logs/.
#
#   bench/gpu_check.sh                      # the project's .venv (needs a CUDA build of torch)
#   VENV_PYTHON=python bench/gpu_check.sh   # inside the Merlin container
#
# Exit status: 0 when every step passed, 1 when one failed or ran out of time, 2 when the
# machine cannot run it at all (no GPU, no CUDA in torch, no tritonserver).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
PYTHON=${VENV_PYTHON:-.venv/bin/python}
WORK=${WORK:-bench/work/gpu_check}
OUTPUT=${OUTPUT:-bench/results/gpu_check.json}
BUDGET_S=${BUDGET_S:-450}  # 8 minutes less a margin for start-up and the JSON
EPOCHS=${EPOCHS:-5}

rm -rf "$WORK"
mkdir -p "$WORK/logs" "$(dirname "$OUTPUT")"
ABSOLUTE_WORK=$(cd "$WORK" && pwd -P)
STEPS="$WORK/steps.tsv"
: > "$STEPS"
STARTED=$(date +%s.%N)
FATAL=""

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

record() {  # name status seconds note
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4//$'\t'/ }" >> "$STEPS"
    echo "   $1: $2 (${3} s)${4:+: $4}"
}

# step NAME LIMIT_S COMMAND...: runs COMMAND under the smaller of LIMIT_S and the budget left.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET_S - ${SECONDS}))
    if ((left < 15)); then
        record "$name" skipped 0 "the ${BUDGET_S} s budget was spent"
        return 1
    fi
    ((limit > left)) && limit=$left
    echo "== $name (at most ${limit} s)"
    local started log="$WORK/logs/$name.log" rc
    started=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    rc=$?
    if ((rc == 0)); then
        record "$name" ok "$(elapsed "$started")" ""
    elif ((rc == 124 || rc == 137)); then
        record "$name" timeout "$(elapsed "$started")" "stopped after ${limit} s"
    else
        record "$name" failed "$(elapsed "$started")" "exit $rc: $(tail -n 1 "$log")"
        tail -n 15 "$log" | sed 's/^/   | /'
    fi
    return $rc
}

skip() { record "$1" skipped 0 "$2"; }

write_json() {
    local writer=$PYTHON
    [[ -x "$writer" ]] || command -v "$writer" > /dev/null || writer=python3
    "$writer" - "$STEPS" "$WORK" "$OUTPUT" "$(elapsed "$STARTED")" "$BUDGET_S" "$FATAL" <<'EOF'
import json, subprocess, sys
from pathlib import Path

steps_file, work, output, total, budget, fatal = sys.argv[1:7]
work = Path(work)


def loaded(path):
    path = work / path
    return json.loads(path.read_text()) if path.is_file() else None


def command(*args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def printed_throughput():
    # bench_train prints each window's throughput as it goes: kept even when a later part failed.
    log = work / "logs" / "bench_train.log"
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    printed = [json.loads(line) for line in lines if line.startswith('{"max_seq_length"') and "sequences_per_s" in line]
    return {"throughput_from_log": printed} if printed else None


steps = []
for line in Path(steps_file).read_text().splitlines():
    name, status, seconds, note = line.split("\t")
    steps.append({"step": name, "status": status, "seconds": float(seconds), **({"note": note} if note else {})})
run_info = loaded("demo/run/run.json")
report = {
    "ok": not fatal and bool(steps) and all(step["status"] == "ok" for step in steps),
    "stopped_because": fatal or None,
    "total_s": float(total),
    "budget_s": int(budget),
    "gpu": command("nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"),
    "commit": command("git", "rev-parse", "HEAD"),
    "uncommitted_changes": bool(command("git", "status", "--porcelain")),
    "steps": steps,
    "demo_training_device": run_info and run_info.get("device"),
    "demo_eval_test": (loaded("demo/run/eval.json") or {}).get("test", {}).get("model", {}).get("full"),
    "parity": loaded("parity.json"),
    "bench_train": loaded("bench_train.json") or printed_throughput(),
    "bench_serve": loaded("bench_serve.json"),
    "bench_serve_note": "bench_serve.py exports the cpu target: its Triton figures are the CPU model step on a GPU machine",
}
Path(output).write_text(json.dumps(report, indent=2))
print(f"wrote {output}: ok={report['ok']}")
EOF
}

stop_leftover_servers() {
    # A step stopped by `timeout` can leave its tritonserver behind (the server runs in its own
    # session); only servers on this check's own repositories are stopped.
    local pid
    for pid in $(pgrep -f -- "--model-repository=$ABSOLUTE_WORK/" 2> /dev/null); do
        echo "   stopping a tritonserver left behind (pid $pid)"
        kill "$pid" 2> /dev/null
    done
}

finish() {
    stop_leftover_servers
    write_json
}
trap finish EXIT

fail_fast() {
    FATAL=$1
    echo "gpu_check: $1" >&2
    exit 2
}

# ------------------------------------------------------------------ can this machine run it?
echo "== preflight"
command -v nvidia-smi > /dev/null || fail_fast "nvidia-smi not found: run this on a machine with an NVIDIA GPU and its driver"
nvidia-smi -L 2> /dev/null | grep -q '^GPU ' || fail_fast "nvidia-smi lists no GPU: $(nvidia-smi -L 2>&1 | head -n 1)"
command -v "$PYTHON" > /dev/null || [[ -x "$PYTHON" ]] || fail_fast "no Python at $PYTHON: run make setup, or set VENV_PYTHON (python in the Merlin container)"
CUDA_CHECK='import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} (CUDA build: {torch.version.cuda}) cannot use the GPU: install a CUDA build of torch")
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))'
CUDA_SAYS=$(timeout 120 "$PYTHON" -c "$CUDA_CHECK" 2>&1) || fail_fast "$(echo "$CUDA_SAYS" | tail -n 1)"
echo "   torch, CUDA, GPU: $CUDA_SAYS"
TRITON_SAYS=$(timeout 120 "$PYTHON" -W ignore -c 'from t4r_app.serve.triton_server import find_tritonserver; print(find_tritonserver().path)' 2>&1) \
    || fail_fast "$(echo "$TRITON_SAYS" | tail -n 1)"
echo "   tritonserver: $TRITON_SAYS"

# ------------------------------------------------------------------ the demo on the GPU
APP=("$PYTHON" -m t4r_app)
DEMO="$WORK/demo"
PORTS=($("$PYTHON" -c 'import socket
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'))
demo_steps() {
    step generate 60 "${APP[@]}" generate --output "$DEMO/raw" --users 3000 --movies 500 --seed 7 --zip || return 1
    step preprocess 90 "${APP[@]}" preprocess --config configs/demo.yaml --input "$DEMO/raw/recommandation.zip" --output "$DEMO/processed" || return 1
    step train 150 "${APP[@]}" train --config configs/demo.yaml --data "$DEMO/processed" --output "$DEMO/run" --quiet \
        "train.epochs=$EPOCHS" "train.min_epochs=$EPOCHS" || return 1
    step evaluate 60 "${APP[@]}" evaluate --run "$DEMO/run" --quiet || return 1
    step export_gpu 60 "${APP[@]}" export --run "$DEMO/run" --output "$DEMO/run/triton" --target gpu --top-k 10 || return 1
    step serve_try_sessions 60 "${APP[@]}" serve --repository "$DEMO/run/triton" --http-port "${PORTS[0]}" --grpc-port "${PORTS[1]}" \
        --metrics-port "${PORTS[2]}" --try-sessions "$DEMO/raw/sample_sessions.jsonl" --run "$DEMO/run" || return 1
    step parity 120 "$PYTHON" - "$WORK" <<'EOF'
"""The gpu repository served by tritonserver against in-process answers, then one-session latency."""
import json, signal, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench.bench_serve import load_test  # the repository root is the working directory
from t4r_app.serve.recommender import Recommender
from t4r_app.model.saved_run import load_run
from t4r_app.data.item_sequences import read_split
from t4r_app.serve.triton_client import TritonRecommender
from t4r_app.serve.triton_server import TritonServer, free_port

# Stopped by `timeout`: leave through the server's context manager, which stops tritonserver.
signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by timeout"))
work = Path(sys.argv[1])
demo, run_dir = work / "demo", work / "demo" / "run"
repository = run_dir / "triton"
mapping = pd.read_parquet(demo / "processed" / "item_mapping.parquet")
movie_of = dict(zip(mapping["item_id"], mapping["movie_index"]))
items = read_split(demo / "processed", "test").items
tested = [[int(movie_of[i]) for i in items.row(r)] for r in range(len(items))]
sessions = tested[:1000] + [[], [10**9], tested[0] * 5]
top_k = json.loads((repository / "t4r_export.json").read_text())["top_k"]
run = load_run(run_dir)
expected = Recommender(run).recommend(sessions, top_k=top_k)


def verdict(got, want, atol=1e-4):
    # GPU kernels may order movies whose scores tie to float precision otherwise: such swaps count apart.
    if got.fallback != want.fallback or got.unknown_movies != want.unknown_movies:
        return "different"
    if len(got.scores) != len(want.scores) or not np.allclose(got.scores, want.scores, atol=atol):
        return "different"
    if got.movies == want.movies:
        return "same"
    return "same_but_tie_order"


ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
with TritonServer(repository, log_path=work / "logs" / "parity_tritonserver.log", **ports) as server:
    client = TritonRecommender(server.http_url, run_dir)
    answers = []
    for start in range(0, len(sessions), 100):  # several sessions per request, as clients send them
        answers += client.recommend(sessions[start : start + 100], top_k=top_k)
    client.close()
    gpu_memory = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"], capture_output=True, text=True
    ).stdout.strip().splitlines()
    latency = load_test(server, run_dir, tested, "http", 1, 1, 5.0)
    log = server.log_path.read_text(errors="replace")

verdicts = [verdict(got, want) for got, want in zip(answers, expected)]
result = {
    "sessions": len(sessions),
    "top_k": top_k,
    "in_process_device": str(next(run.model.parameters()).device),
    "answers": {name: verdicts.count(name) for name in ("same", "same_but_tie_order", "different")},
    "max_score_difference": max(
        (float(np.abs(np.subtract(g.scores, w.scores)).max(initial=0.0)) for g, w in zip(answers, expected) if len(g.scores) == len(w.scores)),
        default=None,
    ),
    "triton_gpu_instance": "executor_model_0_0 (GPU device" in log,
    "model_scores_on_cuda_logged": "scores on cuda" in log,
    "gpu_processes_while_serving": gpu_memory,
    "one_session_http_concurrency_1": latency,
}
(work / "parity.json").write_text(json.dumps(result, indent=2))
print(json.dumps(result, indent=2))
problems = []
if result["answers"]["different"]:
    problems.append(f"{result['answers']['different']} answers differ from the in-process ones")
if not result["triton_gpu_instance"]:
    problems.append("the tritonserver log shows no GPU instance of executor_model")
sys.exit("; ".join(problems) or None)
EOF
}

if ! demo_steps; then
    for name in generate preprocess train evaluate export_gpu serve_try_sessions parity; do
        cut -f1 "$STEPS" | grep -qx "$name" || skip "$name" "an earlier demo step did not pass"
    done
fi

# ------------------------------------------------------------------ the benchmarks
step bench_train 180 "$PYTHON" -m bench.bench_train --work "$WORK/bench_train" --output "$WORK/bench_train.json" --skip-early-stop
step bench_serve 200 "$PYTHON" -m bench.bench_serve --work "$WORK/bench_serve" --output "$WORK/bench_serve.json" --items 1682 --seconds 3

cut -f2 "$STEPS" | grep -qvx ok && exit 1
exit 0

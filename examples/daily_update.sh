#!/usr/bin/env bash
# The daily update, end to end on real data (`make update-demo`, about 7 minutes on 2 cores).
#
# MovieLens-100K is cut by time: day 1 is its first 90% (by timestamp), day 2 all of it, with
# new users' sessions and 45 movies nobody had watched on day 1. Day 1 is trained, exported and
# served; on day 2 the new data keeps day 1's item ids, the model starts from day 1's weights
# under a short budget, is compared with the served one on the users who came back, and goes
# into the running server as version 2 without a restart. Each step is one t4r-app command:
# copy them for your own data.
set -euo pipefail

APP=${APP:-.venv/bin/python -m t4r_app}
PYTHON=${PYTHON:-.venv/bin/python}
WORK=${UPDATE_DIR:-data/update-demo}
HTTP_PORT=${HTTP_PORT:-8000}
GRPC_PORT=${GRPC_PORT:-8001}
METRICS_PORT=${METRICS_PORT:-8002}
DAY1_BUDGET=${DAY1_BUDGET:-240}  # seconds of training on day 1 (from scratch; a full run takes about 10 min here)
DAY2_BUDGET=${DAY2_BUDGET:-60}   # seconds of the warm start on day 2
# Title features: a movie first seen on day 2 starts from its title, not from nothing.
SETTINGS="model.title_embeddings=feature"
SERVER=127.0.0.1:$HTTP_PORT

step() { printf '\n=== %s\n' "$*"; }

step "the log: MovieLens-100K; day 1 = interactions before the 90% quantile of the timestamps"
[ -f "$WORK/raw/recommandation.zip" ] || $APP import --movielens-100k --output "$WORK/raw"
rm -rf "$WORK/day1-raw" "$WORK/day1" "$WORK/day2" "$WORK/run-day1" "$WORK/run-day2" "$WORK/triton"
$APP cut --input "$WORK/raw/recommandation.zip" --output "$WORK/day1-raw" --before-quantile 0.9

step "day 1: preprocess, train (${DAY1_BUDGET} s), export, serve"
$APP preprocess --input "$WORK/day1-raw" --output "$WORK/day1"
$APP train --data "$WORK/day1" --output "$WORK/run-day1" --quiet $SETTINGS "train.time_budget_s=$DAY1_BUDGET"
$APP export --run "$WORK/run-day1" --output "$WORK/triton" --top-k 5
$APP serve --repository "$WORK/triton" --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" \
    --metrics-port "$METRICS_PORT" > "$WORK/serve.log" 2>&1 &
SERVE_PID=$!
trap 'kill $SERVE_PID 2>/dev/null || true; wait $SERVE_PID 2>/dev/null || true' EXIT
$PYTHON - "$SERVER" <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + 180
while True:
    try:
        if urllib.request.urlopen(f"http://{sys.argv[1]}/v2/health/ready", timeout=2).status == 200:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"the server at {sys.argv[1]} was not ready in 180 s (see its log)")
    time.sleep(1)
print(f"serving day 1 at {sys.argv[1]}")
PY

step "day 2: the whole log, preprocessed with day 1's item ids (new movies get the next ones)"
$APP preprocess --input "$WORK/raw/recommandation.zip" --output "$WORK/day2" --vocabulary-from "$WORK/day1"
# A session of day 1's most-watched movie, then the three most-watched new movies, to ask both versions.
SESSION=$($PYTHON - "$WORK" <<'PY'
import sys, pandas as pd
work = sys.argv[1]
day1 = pd.read_parquet(f"{work}/day1/item_mapping.parquet").sort_values("interactions", ascending=False)
day2 = pd.read_parquet(f"{work}/day2/item_mapping.parquet")
new = day2[~day2["movie_index"].isin(day1["movie_index"])].sort_values("interactions", ascending=False)
print(",".join(str(movie) for movie in [day1["movie_index"].iloc[0], *new["movie_index"].head(3)]))
PY
)
step "the served day-1 model, asked about $SESSION (the last three are new): it leaves them out"
$APP recommend --server "$SERVER" --session "$SESSION" --top-k 5

step "day 2: warm start from day 1's model (${DAY2_BUDGET} s)"
$APP train --data "$WORK/day2" --output "$WORK/run-day2" --init-from "$WORK/run-day1" --quiet $SETTINGS \
    train.min_epochs=0 "train.time_budget_s=$DAY2_BUDGET"

step "what changed: the updated model against the served one"
$APP evaluate --run "$WORK/run-day2" --against "$WORK/run-day1" --quiet

step "into the running server as version 2 (the old version answers until the new one is loaded)"
$APP export --run "$WORK/run-day2" --into "$WORK/triton" --server "$SERVER"
$APP recommend --server "$SERVER" --session "$SESSION" --top-k 5

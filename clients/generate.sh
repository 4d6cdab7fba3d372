#!/bin/sh
# Generate jetstream API clients from proto/ for Python, TypeScript (Node.js) and Go.
#
#   clients/generate.sh [OUT_DIR]        (default: clients/gen; it is gitignored)
#
# Everything comes from the .proto files in proto/jetstream/v1 and the protobuf well-known
# types; no jetstream code is needed. The protoc used is the one inside grpcio-tools (PyPI),
# so no system protoc is required:
#
#   python     grpc_tools.protoc --python_out --grpc_python_out --pyi_out  (pip: grpcio-tools)
#   typescript ts-proto with grpc-js services                        (npm: clients/node devDeps)
#   go         protoc-gen-go + protoc-gen-go-grpc                    (go install, if Go is here)
#
# A language whose tools are missing is skipped with a note on stderr; the exit code is
# non-zero only if a generator that ran failed. Set PYTHON to choose the interpreter.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${1:-clients/gen}
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac
GO_MODULE=${GO_MODULE:-example.com/jetstream/clients/go}

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import grpc_tools" 2>/dev/null; then
    echo "generate: error: $PYTHON has no grpcio-tools (pip install grpcio-tools)" >&2
    exit 1
fi
WELL_KNOWN=$("$PYTHON" -c "import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), '_proto'))")
PROTOS=$(cd proto && ls jetstream/v1/*.proto)
protoc() { (cd proto && "$PYTHON" -m grpc_tools.protoc -I . -I "$WELL_KNOWN" "$@" $PROTOS); }
generated=""
skipped=""

# --- Python -----------------------------------------------------------------------------------
mkdir -p "$OUT/python"
protoc --python_out="$OUT/python" --grpc_python_out="$OUT/python" --pyi_out="$OUT/python"
touch "$OUT/python/jetstream/__init__.py" "$OUT/python/jetstream/v1/__init__.py"
generated="$generated python"

# --- TypeScript (Node.js, @grpc/grpc-js) ------------------------------------------------------
TS_PLUGIN="$ROOT/clients/node/node_modules/.bin/protoc-gen-ts_proto"
if [ ! -x "$TS_PLUGIN" ] && command -v npm >/dev/null 2>&1; then
    echo "generate: installing clients/node's npm packages (npm ci)" >&2
    npm ci --prefix clients/node --no-audit --no-fund >&2
fi
if [ -x "$TS_PLUGIN" ]; then
    mkdir -p "$OUT/typescript"
    protoc --plugin=protoc-gen-ts_proto="$TS_PLUGIN" --ts_proto_out="$OUT/typescript" \
        --ts_proto_opt=outputServices=grpc-js,esModuleInterop=true,env=node,forceLong=string
    generated="$generated typescript"
else
    echo "generate: skipping TypeScript: no npm to install ts-proto (clients/node)" >&2
    skipped="$skipped typescript"
fi

# --- Go -----------------------------------------------------------------------------------------
if command -v go >/dev/null 2>&1; then
    GOBIN_DIR="$OUT/.gobin"
    mkdir -p "$GOBIN_DIR" "$OUT/go"
    PATH="$GOBIN_DIR:$PATH"
    if ! command -v protoc-gen-go >/dev/null 2>&1 || ! command -v protoc-gen-go-grpc >/dev/null 2>&1
    then
        GOBIN="$GOBIN_DIR" go install google.golang.org/protobuf/cmd/protoc-gen-go@latest
        GOBIN="$GOBIN_DIR" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@latest
    fi
    # The protos name no go_package; map each file to one Go package here instead.
    MAPS=""
    for file in $PROTOS; do MAPS="$MAPS,M$file=$GO_MODULE/jetstreamv1"; done
    MAPS=${MAPS#,}
    protoc --go_out="$OUT/go" --go_opt=module="$GO_MODULE",$MAPS \
        --go-grpc_out="$OUT/go" --go-grpc_opt=module="$GO_MODULE",$MAPS
    generated="$generated go"
else
    echo "generate: skipping Go: the go toolchain is not installed here (install Go, then" \
         "re-run; protoc-gen-go and protoc-gen-go-grpc come from the Go module proxy)" >&2
    skipped="$skipped go"
fi

echo "generated:${generated:- nothing} in $OUT${skipped:+; skipped:$skipped}"

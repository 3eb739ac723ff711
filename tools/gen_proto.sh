#!/usr/bin/env bash
# Regenerate protonet/proto/protonet_pb2.py from proto/protonet.proto.
#
# Uses the protoc bundled in grpcio-tools (pinned so the generated file is
# reproducible); installs that pin into the active Python if it is missing.
# Usage: bash tools/gen_proto.sh   (also run by `make proto`)
# Override the interpreter with PYTHON=/path/to/python.
set -euo pipefail

GRPCIO_TOOLS_VERSION="1.85.1"
PYTHON="${PYTHON:-python}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

have="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null || true)"
if [ "$have" != "$GRPCIO_TOOLS_VERSION" ]; then
  echo "gen_proto: installing grpcio-tools==$GRPCIO_TOOLS_VERSION (found: ${have:-none})" >&2
  "$PYTHON" -m pip install --quiet "grpcio-tools==$GRPCIO_TOOLS_VERSION"
fi

"$PYTHON" -m grpc_tools.protoc -Iproto --python_out=protonet/proto proto/protonet.proto
echo "gen_proto: wrote protonet/proto/protonet_pb2.py" >&2

#!/usr/bin/env bash
# The benchmark's peers, each in its own venv, pinned by a constraints file next to this script, and the
# plotting library for the report (bench/requirements-bench.txt) in the project's venv. Idempotent: a venv
# is rebuilt only when its constraints file is newer than its stamp.
#
#   .venv-bench-mcp-proxy  mcp-proxy 0.13.0 (it pins mcp<2, so it cannot share the project's venv)
#   .venv-bench-fastmcp    fastmcp (its proxy: bench/peers/fastmcp_proxy.py)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
PEERS=bench/peers

peer_venv() {
	local dir=$1 constraints=$2
	shift 2
	local stamp=$dir/.installed
	if [[ -f $stamp && $stamp -nt $constraints ]]; then
		return
	fi
	echo "bench-peers: building $dir" >&2
	"$PYTHON" -m venv "$dir"
	"$dir/bin/pip" install --quiet --upgrade pip
	"$dir/bin/pip" install --quiet -c "$constraints" "$@"
	"$dir/bin/pip" check
	echo '*' >"$dir/.gitignore" # keep the venv out of git without touching the shared .gitignore
	touch "$stamp"
}

peer_venv .venv-bench-mcp-proxy "$PEERS/constraints-mcp-proxy.txt" mcp-proxy==0.13.0
peer_venv .venv-bench-fastmcp "$PEERS/constraints-fastmcp.txt" fastmcp

stamp=.venv/.bench-installed
if [[ ! -f $stamp || bench/requirements-bench.txt -nt $stamp ]]; then
	.venv/bin/pip install --quiet -r bench/requirements-bench.txt
	touch "$stamp"
fi

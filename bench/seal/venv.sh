# Sourced by bench/seal/run.sh and bench/heads_vs_seal.sh: sets `venv` to a virtualenv with
# bench/seal/requirements.txt installed (tenseal for SEAL), created on first use.
#   seal_venv NAME REPO [VENV_DIR]
# NAME prefixes messages; VENV_DIR defaults to ${TMPDIR:-/tmp}/hepeft-seal-venv and must lie
# outside REPO. Already-satisfied exact pins do not touch the network.
seal_venv() {
  local name="$1" repo="$2" requirements
  requirements="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/requirements.txt"
  venv="${3:-${TMPDIR:-/tmp}/hepeft-seal-venv}"
  mkdir -p "$venv"
  venv="$(cd "$venv" && pwd)"
  case "$venv/" in
    "$repo"/*) echo "$name: refusing to put the virtualenv inside the repository ($venv)" >&2; exit 2 ;;
  esac
  local py="${PYTHON:-}" cand
  if [ -z "$py" ]; then
    for cand in python3.11 python3; do
      if command -v "$cand" >/dev/null 2>&1; then py="$cand"; break; fi
    done
  fi
  [ -n "$py" ] || { echo "$name: no python3 found" >&2; exit 2; }
  if [ ! -x "$venv/bin/python" ]; then
    echo "$name: creating virtualenv in $venv with $py" >&2
    "$py" -m venv "$venv" >&2
  fi
  "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$requirements" >&2
}

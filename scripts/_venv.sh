# Sourced by the scripts: find Python >= 3.11, create .venv once, install the project into it
# (again only when pyproject.toml or the extras changed). Usage: . scripts/_venv.sh [extras]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  PY=""
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      PY=$candidate; break
    fi
  done
  [ -n "$PY" ] || { echo "error: Python 3.11 or newer is required" >&2; exit 1; }
  echo "creating $VENV with $("$PY" --version)"
  "$PY" -m venv "$VENV"
fi
EXTRAS=${1:-}
STAMP="$VENV/.installed${EXTRAS:+-$EXTRAS}"
WANT=$(cat "$ROOT/pyproject.toml" | cksum)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "installing llm-config-manager${EXTRAS:+[$EXTRAS]} into .venv ..."
  LOG=$(mktemp)
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$ROOT${EXTRAS:+[$EXTRAS]}" >"$LOG" 2>&1; then
    cat "$LOG" >&2; rm -f "$LOG"; echo "error: installation failed (output above)" >&2; exit 1
  fi
  rm -f "$LOG"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"

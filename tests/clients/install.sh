#!/usr/bin/env bash
# Installs the third-party SMART clients the tests in tests/smart_clients.rs drive, into
# target/third-party/. Idempotent: a step whose marker matches is skipped. Loud on failure.
#
#   bash tests/clients/install.sh python   # venv target/third-party/py-smart (requirements.txt)
#   bash tests/clients/install.sh js       # npm fhirclient@2.6.3 + playwright-core@1.65.1
#                                          # into target/third-party/smart-js
#   bash tests/clients/install.sh r4       # venv target/third-party/py-r4 (requirements-r4.txt):
#                                          # fhir.resources 6.4.0, the R4 judge of tests/profiles.rs
#
# Chromium is the Debian package `chromium` (/usr/bin/chromium); .ci/run installs it with apt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

# A venv under target/third-party/ holding a requirements file's pins, checked by a Python
# snippet; the copied requirements file marks it done.
#   venv_env NAME REQUIREMENTS WHAT CHECK
venv_env() {
  local dir="$root/target/third-party/$1" requirements="$here/$2"
  local marker="$dir/installed-requirements.txt"
  if [ -f "$marker" ] && cmp -s "$marker" "$requirements"; then
    return 0
  fi
  echo "installing $3 into $dir" >&2
  rm -f "$marker"
  if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir"
  fi
  "$dir/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$requirements"
  "$dir/bin/python" -c "$4"
  cp "$requirements" "$marker"
}

python_env() {
  venv_env py-smart requirements.txt "the SMART Python client" '
import cryptography, jwt, requests
from fhirclient import client
assert client.__version__ == "4.4.0", client.__version__
'
}

r4_env() {
  venv_env py-r4 requirements-r4.txt "fhir.resources" '
from fhir.resources import __fhir_version__
assert __fhir_version__ == "4.0.1", __fhir_version__
'
}

js_env() {
  local dir="$root/target/third-party/smart-js"
  local want_fc="2.6.3" want_pw="1.65.1"
  version() { sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$dir/node_modules/$1/package.json" 2>/dev/null | head -n 1; }
  if [ "$(version fhirclient)" = "$want_fc" ] && [ "$(version playwright-core)" = "$want_pw" ] \
    && [ -f "$dir/node_modules/fhirclient/build/fhir-client.js" ]; then
    return 0
  fi
  echo "installing the SMART JS client and playwright-core into $dir" >&2
  mkdir -p "$dir"
  # Without --legacy-peer-deps --omit=optional fhirclient pulls ~337 MB of react-native.
  npm install --prefix "$dir" --no-audit --no-fund --legacy-peer-deps --omit=optional \
    "fhirclient@$want_fc" "playwright-core@$want_pw" >&2
  if [ "$(version fhirclient)" != "$want_fc" ] || [ "$(version playwright-core)" != "$want_pw" ]; then
    echo "npm install into $dir did not leave fhirclient@$want_fc and playwright-core@$want_pw" >&2
    exit 1
  fi
}

case "${1:-}" in
  python) python_env ;;
  js) js_env ;;
  r4) r4_env ;;
  all) python_env; js_env; r4_env ;;
  *) echo "usage: $0 python|js|r4|all" >&2; exit 2 ;;
esac

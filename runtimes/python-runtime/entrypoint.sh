#!/bin/sh
# klt's python function runner. SCRIPT is a mounted file (run by path) or an http(s) URL
# (fetched, then run from stdin, as Keptn's runner does). CMD_ARGS go to the interpreter.
# Unlike a bare `curl | python3`, a failed fetch fails the task instead of running nothing.
set -eu
if [ -z "${SCRIPT:-}" ]; then
  echo "python-runtime: SCRIPT is not set: nothing to run" >&2
  exit 2
fi
case "$SCRIPT" in
  http://*|https://*)
    code=$(python3 -c 'import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=30) as r:
    sys.stdout.write(r.read().decode())' "$SCRIPT") || {
      echo "python-runtime: could not fetch $SCRIPT" >&2
      exit 1
    }
    # shellcheck disable=SC2086
    printf '%s\n' "$code" | exec python3 ${CMD_ARGS:-} -
    ;;
  *)
    # shellcheck disable=SC2086
    exec python3 ${CMD_ARGS:-} "$SCRIPT"
    ;;
esac

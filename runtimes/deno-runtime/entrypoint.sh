#!/bin/sh
# klt's deno function runner. The contract is Keptn's: SCRIPT names the function (a mounted
# file or an http(s) URL), DATA / SECURE_DATA / KEPTN_CONTEXT carry its inputs, and CMD_ARGS
# (word-split on purpose, like Keptn's runner) become Deno.args.
set -eu
if [ -z "${SCRIPT:-}" ]; then
  echo "deno-runtime: SCRIPT is not set: nothing to run" >&2
  exit 2
fi
# shellcheck disable=SC2086
exec deno run --allow-net --allow-write --allow-read \
  --allow-env=DATA,SECURE_DATA,KEPTN_CONTEXT,CMD_ARGS "$SCRIPT" ${CMD_ARGS:-}

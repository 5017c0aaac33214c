#!/usr/bin/env bash
# Installs the system packages the demo needs, when missing (`make sysdeps`, `make demo`; never `make test`).
#   required: espeak-ng (speech), sox (tones/noises/mixing), fluidsynth + timgm6mb-soundfont (instruments)
#   optional: libtcmalloc-minimal4 (faster XLA host allocations on CPU), best effort, never fails the demo
# As root with apt-get: `apt-get update`, then the missing required packages, then (separately) the optional one.
# Otherwise, or if the install fails: a missing required package prints the exact apt-get line and exits 1; a
# missing optional one only prints a note (exit 0).
set -u
need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need+=(sox)
command -v fluidsynth >/dev/null 2>&1 || need+=(fluidsynth)
[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || need+=(timgm6mb-soundfont)
optional=()
ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal.so.4 || optional+=(libtcmalloc-minimal4)
[ ${#need[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0
if [ "$(id -u 2>/dev/null)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  echo "[setup] installing system packages: ${need[*]} ${optional[*]}"
  if apt-get update -qq >/dev/null; then
    if [ ${#need[@]} -gt 0 ] && apt-get install -y -qq "${need[@]}" >/dev/null; then
      need=()
    fi
    if [ ${#optional[@]} -gt 0 ] && apt-get install -y -qq "${optional[@]}" >/dev/null; then
      optional=()
    fi
  else
    echo "[setup] apt-get update failed" >&2
  fi
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "[setup] ERROR: missing system packages: ${need[*]}" >&2
  echo "[setup] Install them, e.g.:  sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  echo "[setup] (the built-in demo corpus is synthesised with them; \`make test\` skips the tests that need them)" >&2
  exit 1
fi
if [ ${#optional[@]} -gt 0 ]; then
  echo "[setup] note: optional ${optional[*]} not installed (JAX steps on CPU are ~28% slower without tcmalloc;" \
       "sudo apt-get install -y ${optional[*]})"
fi
exit 0

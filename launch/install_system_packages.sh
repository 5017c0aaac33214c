#!/usr/bin/env bash
# Installs the system packages the demo corpus and the fast launch path need, when missing.
#   espeak-ng (speech), sox (tones/noises/mixing), fluidsynth + timgm6mb-soundfont (instruments),
#   libtcmalloc-minimal4 (faster XLA host allocations; optional).
# Without root or apt-get it prints exactly what to install and exits 1.
set -u
need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need+=(sox)
command -v fluidsynth >/dev/null 2>&1 || need+=(fluidsynth)
[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || need+=(timgm6mb-soundfont)
optional=()
ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal.so.4 || optional+=(libtcmalloc-minimal4)
[ ${#need[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing system packages: ${need[*]} ${optional[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" "${optional[@]}" >/dev/null; then
    exit 0
  fi
  # Retry without the optional allocator: it only makes steps faster.
  if [ ${#need[@]} -eq 0 ] || apt-get install -y -qq "${need[@]}" >/dev/null; then
    [ ${#optional[@]} -gt 0 ] && echo "[setup] note: could not install ${optional[*]} (optional, speeds up JAX on CPU)"
    exit 0
  fi
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "[setup] ERROR: missing system packages: ${need[*]}" >&2
  echo "[setup] Install them, e.g.:  sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  echo "[setup] (the built-in demo corpus is synthesised with them; nothing else needs them)" >&2
  exit 1
fi
echo "[setup] note: optional ${optional[*]} not installed (JAX steps on CPU are ~28% slower without tcmalloc)"
exit 0

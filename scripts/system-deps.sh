#!/usr/bin/env bash
# Installs the non-Python programs the stack uses: FluidSynth + a General MIDI soundfont (synthetic corpus) and
# ffmpeg with libopus (the codec's Opus reference), and Debian's chromium (tests/test_report.py screenshots
# reports/<RUN>/index.html headless). Uses apt-get when it can; otherwise says what to install.
set -euo pipefail
missing=()
command -v fluidsynth >/dev/null || missing+=(fluidsynth)
ls /usr/share/sounds/sf2/*.sf2 >/dev/null 2>&1 || [ -n "${MUSICLM_SOUNDFONT:-}" ] || missing+=(timgm6mb-soundfont)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing with apt-get: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
elif command -v apt-get >/dev/null && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  cat >&2 <<MSG
Missing system programs: ${missing[*]}
Install them yourself, e.g.
  Debian/Ubuntu:  sudo apt-get install --no-install-recommends fluidsynth timgm6mb-soundfont ffmpeg chromium
  macOS:          brew install fluid-synth ffmpeg   (and set MUSICLM_SOUNDFONT=/path/to/a/GM.sf2; the report test skips without chromium)
  conda:          conda install -c conda-forge fluidsynth ffmpeg   (plus MUSICLM_SOUNDFONT)
MSG
  exit 1
fi

#!/usr/bin/env bash
# Real recorded music the models never saw, for `musiclm eval codec --audio-dir` without internet access beyond the
# Debian archive: the 41 orchestral tracks (Ogg Vorbis, CC BY-SA / GPL) of Debian's wesnoth-1.16-music package.
# The .deb is fetched with `apt-get download` (no root, nothing installed) and unpacked into DEST.
#   bash scripts/real-music.sh [DEST=data/real/wesnoth]
set -euo pipefail
dest=${1:-data/real/wesnoth}
pkg=wesnoth-1.16-music
if compgen -G "$dest/*.ogg" >/dev/null; then echo "$dest already holds the tracks"; exit 0; fi
command -v apt-get >/dev/null || { echo "needs apt-get (Debian/Ubuntu); any folder of music files works with --audio-dir" >&2; exit 1; }
tmp=$(mktemp -d)
chmod a+rwx "$tmp"  # apt-get download writes as the _apt user when run as root
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "$pkg" >/dev/null)
dpkg-deb -x "$tmp"/*.deb "$tmp/x"
mkdir -p "$dest"
find "$tmp/x" -name '*.ogg' -exec cp {} "$dest"/ \;
cp "$tmp/x/usr/share/doc/$pkg/copyright" "$dest/COPYRIGHT" 2>/dev/null || true
echo "$(ls "$dest"/*.ogg | wc -l) tracks in $dest"

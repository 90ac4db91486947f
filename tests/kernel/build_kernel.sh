#!/usr/bin/env bash
# Builds the test VM's kernel once: Debian's linux-source-6.12, `make tinyconfig` plus the
# options in kernel.config (mtty, VFIO, io_uring, TCP...), and caches bzImage outside the clone,
# keyed by the source package's version and the options, so a later run (or another clone)
# reuses it. Prints the bzImage path as its last line.
#   tests/kernel/build_kernel.sh            (cache: $MIGMOVER_KERNEL_CACHE, default
#                                            ~/.cache/migmover/kernel)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache_root="${MIGMOVER_KERNEL_CACHE:-${HOME:-/root}/.cache/migmover/kernel}"
tarball=/usr/src/linux-source-6.12.tar.xz
[[ -f "$tarball" ]] || { echo "build_kernel: $tarball missing (apt-get install linux-source-6.12)" >&2; exit 1; }

version="$(dpkg-query -W -f='${Version}' linux-source-6.12)"
options="$(grep -v '^#' "$here/kernel.config" | tr -s ' \n' ' ')"
key="$(printf '%s\n%s\n' "$version" "$options" | sha256sum | cut -c1-16)"
out="$cache_root/$version-$key"
if [[ -f "$out/bzImage" ]]; then
  echo "build_kernel: cached $out/bzImage" >&2
  echo "$out/bzImage"
  exit 0
fi

mkdir -p "$cache_root"
work="$(mktemp -d "$cache_root/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "build_kernel: building linux-source-6.12 $version (options $key) in $work; about 3 minutes on 2 cores" >&2
tar -C "$work" -xf "$tarball"
src="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'linux-source-*')"
[[ -d "$src" ]] || { echo "build_kernel: no linux-source-* directory in $tarball" >&2; exit 1; }
make -C "$src" -s tinyconfig >/dev/null
args=()
for o in $options; do args+=(-e "$o"); done
"$src/scripts/config" --file "$src/.config" "${args[@]}"
make -C "$src" -s olddefconfig >/dev/null
missing=()
for o in $options; do
  grep -q "^CONFIG_$o=y" "$src/.config" || missing+=("$o")
done
if ((${#missing[@]} > 0)); then
  echo "build_kernel: options did not stick after olddefconfig: ${missing[*]}" >&2
  exit 1
fi
start=$SECONDS
make -C "$src" -s -j"$(nproc)" bzImage >"$work/make.log" 2>&1 || { tail -30 "$work/make.log" >&2; exit 1; }
mkdir -p "$out.tmp"
cp "$src/arch/x86/boot/bzImage" "$src/.config" "$out.tmp/"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "build_kernel: built in $((SECONDS - start)) s: $out/bzImage" >&2
echo "$out/bzImage"

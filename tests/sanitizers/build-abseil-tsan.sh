#!/usr/bin/env bash
# Builds Debian's own Abseil source (the version libabsl-dev has installed)
# with ThreadSanitizer, as static libraries installed under
#   $PREFIX (default build-tsan/abseil),
# for make test-tsan. Why: absl::Mutex lives in libabsl_synchronization.so,
# which Debian compiles without TSan, so TSan never sees its lock and
# unlock and reports every access the mutex guards as a race. With the
# instrumented copy it sees them, and what it still reports is real.
#
# The copy gets its own inline namespace (absl::sparse_tsan instead of
# Debian's absl::debian3), so it never mixes with the uninstrumented
# Abseil that Debian's gRPC links.
#
# The source comes from Debian's archive through apt (the same mirrors and
# keyring as /etc/apt/sources.list.d/debian.sources, with a private package
# list), and is checked against its signed .dsc. Idempotent: nothing is
# fetched or built when $PREFIX already holds this version.
set -euo pipefail

PREFIX=${1:-build-tsan/abseil}
mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)
WORK="$PREFIX.work"

version=$(dpkg-query -W -f='${Version}' libabsl-dev 2>/dev/null) ||
  { echo "build-abseil-tsan: libabsl-dev is not installed (run deploy/install-deps.sh)" >&2; exit 1; }
if [[ -f "$PREFIX/VERSION" && "$(cat "$PREFIX/VERSION")" == "$version" ]]; then
  echo "build-abseil-tsan: Abseil $version with TSan already in $PREFIX"
  exit 0
fi

echo "build-abseil-tsan: fetching Debian's abseil $version source"
rm -rf "$WORK"
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/apt/sources" "$WORK/src"
# deb-src entries for the mirrors this machine already uses.
sources=(/etc/apt/sources.list.d/*.sources)
if [[ ! -e "${sources[0]}" ]]; then
  echo "build-abseil-tsan: no /etc/apt/sources.list.d/*.sources to take the mirrors from" >&2
  exit 1
fi
for f in "${sources[@]}"; do
  sed 's/^Types:.*/Types: deb-src/' "$f" >"$WORK/apt/sources/$(basename "$f")"
done
APT=(-o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache"
     -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$WORK/apt/sources"
     -o "APT::Get::Only-Source=true")
apt-get "${APT[@]}" update -q >"$WORK/apt-update.log" 2>&1 ||
  { cat "$WORK/apt-update.log" >&2; echo "build-abseil-tsan: apt-get update of the source lists failed" >&2; exit 1; }
(cd "$WORK/src" && apt-get "${APT[@]}" source -q "abseil=$version") >"$WORK/apt-source.log" 2>&1 ||
  { cat "$WORK/apt-source.log" >&2; echo "build-abseil-tsan: apt-get source abseil=$version failed" >&2; exit 1; }
src=$(find "$WORK/src" -mindepth 1 -maxdepth 1 -type d -name 'abseil-*' | head -1)
[[ -n "$src" && -f "$src/absl/base/options.h" ]] ||
  { echo "build-abseil-tsan: no unpacked source in $WORK/src" >&2; exit 1; }

# Same options as Debian's build (its patches are applied), other namespace.
grep -q '^#define ABSL_OPTION_INLINE_NAMESPACE_NAME ' "$src/absl/base/options.h" ||
  { echo "build-abseil-tsan: options.h has no ABSL_OPTION_INLINE_NAMESPACE_NAME" >&2; exit 1; }
sed -i 's/^#define ABSL_OPTION_INLINE_NAMESPACE_NAME .*/#define ABSL_OPTION_INLINE_NAMESPACE_NAME sparse_tsan/' \
  "$src/absl/base/options.h"

echo "build-abseil-tsan: building it with clang and -fsanitize=thread (a few minutes)"
cmake -S "$src" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
  -DCMAKE_CXX_STANDARD=20 -DABSL_PROPAGATE_CXX_STD=ON -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
  -DBUILD_SHARED_LIBS=OFF -DBUILD_TESTING=OFF -DABSL_ENABLE_INSTALL=ON \
  -DCMAKE_INSTALL_PREFIX="$PREFIX" >"$WORK/cmake.log" 2>&1 ||
  { cat "$WORK/cmake.log" >&2; exit 1; }
cmake --build "$WORK/build" -j "$(nproc)" --target install >"$WORK/build.log" 2>&1 ||
  { tail -50 "$WORK/build.log" >&2; echo "build-abseil-tsan: build failed ($WORK/build.log)" >&2; exit 1; }
echo "$version" >"$PREFIX/VERSION"
rm -rf "$WORK"
echo "build-abseil-tsan: Abseil $version with TSan installed in $PREFIX"

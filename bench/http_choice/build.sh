#!/usr/bin/env bash
# Builds the three minimal HTTP servers into ./bin (this directory only).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p bin
CXX=${CXX:-g++}
FLAGS="-O2 -std=c++17 -Wall -Wextra"
set -x
$CXX $FLAGS civetweb_server.cc -o bin/civetweb_server -lcivetweb -pthread
$CXX $FLAGS beast_server.cc    -o bin/beast_server -pthread   # Boost.System is header-only in 1.74
$CXX $FLAGS evhttp_server.cc   -o bin/evhttp_server -levent -levent_pthreads -pthread

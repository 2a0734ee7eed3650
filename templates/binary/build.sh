#!/bin/sh
# Compiles the app's binary into bin/ (needs a C compiler: apt-get install gcc).
set -e
cd "$(dirname "$0")"
mkdir -p bin
cc -O2 -o bin/hello src/hello.c

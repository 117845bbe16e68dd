#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The short run of the torture harness (tests/torture.c) inside make check:
# a fixed seed, about 40 s, the operation classes that hold on today's code.
# `make torture` runs it long with every class.  Exit 0 pass, 1 fail, 77 skip.
#
#   PAGERD=build/pagerd tests/itest_torture.sh
set -u
PAGERD=${PAGERD:-build/pagerd}
bin=$(dirname "$PAGERD")/tests/torture
[ -x "$bin" ] || { echo "SKIP: no $bin (make $(dirname "$PAGERD")/tests/torture)"; exit 77; }
export TORTURE_SEED=${TORTURE_SEED:-20261204}
export TORTURE_SECONDS=${TORTURE_SECONDS:-35}
export TORTURE_OPS=${TORTURE_OPS:-write,read,rmw,discard,recreate,inject,kill,stall,limit,restart,snapshot,restore}
export TORTURE_HANG=${TORTURE_HANG:-60}
exec "$bin"

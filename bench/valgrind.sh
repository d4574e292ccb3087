#!/bin/sh
# valgrind memcheck over a subset of the test suite, every backend.
#
#   bench/valgrind.sh                 # the default subset (below)
#   bench/valgrind.sh tests/net -k close   # any pytest arguments, paths relative to the repository
#
# netpoll is built (plain -O2, no sanitizer) and installed into a venv of
# $PYTHON, in a build directory of its own, and the tests run from a scratch
# directory under valgrind with PYTHONMALLOC=malloc (so that memcheck sees
# every object allocation), leak checking off (CPython keeps memory until
# exit by design), and bench/valgrind-python.supp. Exit status 99 when
# memcheck reports an error, pytest's status otherwise.
#
# $PYTHON must itself be clean under memcheck; the script checks that first
# with `python -c pass`. Debian's /usr/bin/python3 (3.11) is, and it is the
# default when it exists. A pyenv-built CPython 3.11 is not: its -O3
# maybe_small_long() reads the uninitialised digit of a zero int, and the
# taint spreads to every use of the small int 0 (thousands of reports in
# CPython's own frames, no suppression can contain them).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
VENV=${VENV:-$ROOT/build/valgrind-venv}
SUPP=$ROOT/bench/valgrind-python.supp
VALGRIND="valgrind --tool=memcheck --error-exitcode=99 --leak-check=no --num-callers=40 --child-silent-after-fork=yes
    --suppressions=$SUPP"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
echo "== building netpoll into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check pytest "hypothesis>=6"
NETPOLL_KQUEUE_SHIM=$(case $(uname) in Linux) echo 1;; *) echo 0;; esac) \
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
    --config-settings=--build-option="build --build-base build/valgrind" "$ROOT"

echo "== is the interpreter itself clean under memcheck?"
if ! PYTHONMALLOC=malloc $VALGRIND -q "$VENV/bin/python" -c "import netpoll" ; then
    echo "$PYTHON reports memcheck errors by itself: use a memcheck-clean interpreter (PYTHON=...)" >&2
    exit 2
fi

if [ $# -eq 0 ]; then
    set -- \
        tests/conformance/test_backend.py \
        tests/conformance/test_lifecycle.py \
        tests/conformance/test_netpoll_wait.py \
        tests/runtime/test_pollwait.py \
        tests/net/test_close.py \
        tests/net/test_echo.py \
        tests/reliability/test_fault_sweep.py \
        -q
fi
# Paths given relative to the repository.
for a in "$@"; do
    shift
    case "$a" in
        tests/*|tests) set -- "$@" "$ROOT/$a" ;;
        *) set -- "$@" "$a" ;;
    esac
done

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
cd "$SCRATCH"
echo "== valgrind memcheck: pytest $*"
status=0
PYTHONMALLOC=malloc NETPOLL_TEST_HANG_LIMIT=${NETPOLL_TEST_HANG_LIMIT:-900} \
    $VALGRIND "$VENV/bin/python" -m pytest -p no:cacheprovider "$@" || status=$?
if [ $status -eq 99 ]; then
    echo "== memcheck reported errors (see above)" >&2
fi
exit $status

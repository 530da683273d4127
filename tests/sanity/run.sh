#!/usr/bin/env bash
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# ansible-test sanity, offline, on a copy of this checkout; no ignore file.
#
#   tests/sanity/run.sh                        all sanity tests
#   tests/sanity/run.sh --test pep8 --test validate-modules    (any `ansible-test sanity` arguments)
#   KEEP=1 tests/sanity/run.sh                 keep the copy, with tests/output, for a look afterwards
#
# Exit status is ansible-test's: non-zero on any finding. The first run on a machine builds one venv
# per test from PyPI (about 85 s); later runs reuse them from ~/.ansible/test/venv (about 20 s).
set -euo pipefail
# shellcheck source=tests/sanity/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need ansible-test
prepare_pip_standin
copy_collection
cd "$COPY"
start=$(date +%s)
rc=0
ansible-test sanity --local --python "$PYTHON_VERSION" --color no "$@" || rc=$?
echo "run.sh: ansible-test sanity exit $rc after $(( $(date +%s) - start ))s"
exit $rc

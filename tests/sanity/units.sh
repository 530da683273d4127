#!/usr/bin/env bash
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# ansible-test units on a copy of this checkout, in the collection's own venv (--local).
#
#   tests/sanity/units.sh                      every unit test
#   tests/sanity/units.sh tests/unit/plugins/filter    (any `ansible-test units` arguments)
#
# --requirements makes ansible-test pip-install what it needs (mock, pytest-mock, pytest-xdist) into
# the venv when missing; requirements-dev.txt lists them, so normally nothing is installed. The same
# tests also run with plain pytest (make unit), through tests/conftest.py.
set -euo pipefail
# shellcheck source=tests/sanity/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need ansible-test
copy_collection
cd "$COPY"
start=$(date +%s)
rc=0
ansible-test units --local --python "$PYTHON_VERSION" --requirements --color no "$@" || rc=$?
echo "units.sh: ansible-test units exit $rc after $(( $(date +%s) - start ))s"
exit $rc

# shellcheck shell=bash
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Sourced by tests/sanity/{run,units,changelog}.sh. Sets ROOT, VENV, PY, PYTHON_VERSION and PATH.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
export PATH="$VENV/bin:$PATH"

need() {
    [ -x "$VENV/bin/$1" ] || { echo "$(basename "$0"): $VENV/bin/$1 missing; pip install -r requirements-dev.txt (after make setup)" >&2; exit 2; }
}

# ansible-test bootstraps pip into every sanity venv with a get-pip.py it downloads from a host these
# machines cannot reach, unless ~/.ansible/test/cache/get_pip_<version>.py exists. Put our stand-in
# (tests/sanity/get_pip_standin.py: ensurepip, then pip install) there. <version> is read from the
# installed ansible-test, so a newer ansible-core cannot silently bring the download back.
# A file there without our marker (a real get-pip.py) is left alone.
prepare_pip_standin() {
    local pip_version cache standin
    pip_version=$("$PY" - <<'PYEOF'
import inspect
import re
from ansible_test._internal import python_requirements as pr
m = re.search(r"pip='([0-9.]+)'", inspect.getsource(pr.get_venv_packages))
if not m:
    raise SystemExit("cannot find the pip version ansible-test bootstraps (get_venv_packages changed?)")
print(m.group(1))
PYEOF
    ) || exit 2
    cache=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
    standin=$ROOT/tests/sanity/get_pip_standin.py
    mkdir -p "$(dirname "$cache")"
    if [ ! -e "$cache" ] || grep -q hvresize-get-pip-standin "$cache"; then
        if ! cmp -s "$standin" "$cache"; then
            cp "$standin" "$cache.tmp" && mv "$cache.tmp" "$cache"
            echo "$(basename "$0"): pip $pip_version bootstrap stand-in installed at $cache"
        fi
    else
        echo "$(basename "$0"): $cache is not our stand-in (a real get-pip.py?); left as it is"
    fi
}

# ansible-test wants the collection at ansible_collections/<namespace>/<name> and dislikes symlinks:
# copy what git knows (tracked files, plus new files .gitignore does not exclude) into a temp dir.
# Sets COPY (the collection root in the copy). KEEP=1 keeps the copy (with tests/output) afterwards.
copy_collection() {
    local namespace name work
    namespace=$(sed -n 's/^namespace: *//p' "$ROOT/galaxy.yml")
    name=$(sed -n 's/^name: *//p' "$ROOT/galaxy.yml")
    work=$(mktemp -d "${TMPDIR:-/tmp}/hvresize-test.XXXXXX")
    if [ "${KEEP:-0}" = 1 ]; then
        # shellcheck disable=SC2064  # expand now: $work is local
        trap "echo '$(basename "$0"): copy kept in $work'" EXIT
    else
        # shellcheck disable=SC2064
        trap "rm -rf '$work'" EXIT
    fi
    COPY=$work/ansible_collections/$namespace/$name
    mkdir -p "$COPY"
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
        | rsync -a --from0 --files-from=- --ignore-missing-args "$ROOT/" "$COPY/"
}

#!/usr/bin/env bash
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Changelog checks and release (antsibull-changelog; config in changelogs/config.yaml).
#
#   tests/sanity/changelog.sh            lint: fragments, changelogs/changelog.yaml, and CHANGELOG.rst
#                                        is what changelog.yaml renders to; fails on any error. Lists
#                                        fragments not yet in a release (not an error).
#   tests/sanity/changelog.sh --release  fold the fragments into the release of galaxy.yml's version
#                                        (creating it, or updating it if it exists) and re-render
#                                        CHANGELOG.rst. Fragments are kept (keep_fragments: true).
set -euo pipefail
# shellcheck source=tests/sanity/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

need antsibull-changelog
cd "$ROOT"

if [ "${1:-}" = --release ]; then
    version=$(sed -n 's/^version: *//p' galaxy.yml)
    antsibull-changelog release --version "$version" --update-existing --reload-plugins
    echo "changelog.sh: CHANGELOG.rst rendered for $version"
    exit 0
fi

rc=0
antsibull-changelog lint || rc=1
if [ -f changelogs/changelog.yaml ]; then
    antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml || rc=1
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    cp -r galaxy.yml changelogs "$tmp/"
    if (cd "$tmp" && antsibull-changelog generate >/dev/null); then
        if ! diff -u CHANGELOG.rst "$tmp/CHANGELOG.rst"; then
            echo "changelog.sh: CHANGELOG.rst does not match changelogs/changelog.yaml; run tests/sanity/changelog.sh --release" >&2
            rc=1
        fi
    else
        echo "changelog.sh: antsibull-changelog generate failed" >&2
        rc=1
    fi
    unreleased=$("$PY" - <<'PYEOF'
import os
import yaml
with open("changelogs/changelog.yaml") as f:
    data = yaml.safe_load(f) or {}
known = {frag for rel in (data.get("releases") or {}).values() for frag in rel.get("fragments", [])}
print(" ".join(sorted(f for f in os.listdir("changelogs/fragments")
                      if f.endswith((".yml", ".yaml")) and f not in known)))
PYEOF
    )
    [ -z "$unreleased" ] || echo "changelog.sh: not in a release yet (tests/sanity/changelog.sh --release folds them in): $unreleased"
fi
[ $rc = 0 ] && echo "changelog.sh: changelog OK"
exit $rc

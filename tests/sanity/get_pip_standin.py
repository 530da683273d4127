# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offline stand-in for the get-pip.py that ansible-test downloads before every sanity test.

hvresize-get-pip-standin (marker: tests/sanity/run.sh replaces only files that carry it)

ansible-test creates a venv without pip and runs this file (as __main__, through its quiet_pip.py)
with get-pip's arguments, e.g. `--disable-pip-version-check pip==24.2 --no-setuptools --no-wheel`.
We bootstrap pip from the interpreter's own wheels (ensurepip) and then let that pip install the
requested packages; the get-pip-only options are translated, not passed to pip.
"""

from __future__ import annotations

import subprocess
import sys

GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")


def main(argv):
    pip_args = [a for a in argv if a not in GET_PIP_ONLY]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet"] + pip_args)
    # get-pip.py --no-setuptools/--no-wheel leaves them out; ensurepip may have brought setuptools.
    unwanted = [name for opt, name in (("--no-setuptools", "setuptools"), ("--no-wheel", "wheel"))
                if opt in argv and not any(a.split("=")[0].split("<")[0].split(">")[0] == name for a in pip_args)]
    if unwanted:
        subprocess.call([sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes"] + unwanted,
                        stderr=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

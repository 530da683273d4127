# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check the AWX surveys in extensions/awx against AWX's survey spec rules and our playbooks.

    .venv/bin/python tests/sanity/check_awx.py        exit 1 and one line per problem, else "OK"

The rules are those AWX applies when a survey spec is POSTed to /api/v2/job_templates/N/survey_spec/
(JobTemplateSurveySpec._validate_spec_data): name, description (strings) and a non-empty spec list;
per question type, question_name and variable (strings) and required (bool); variables unique; a known
type; a default of the type's kind; integer min/max; choices for multiplechoice/multiselect, with the
default among them (one default for multiplechoice). On top: every survey variable is an extra var
its playbook reads, and the resize survey asks exactly what the resize playbook takes.
"""

from __future__ import annotations

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AWX = os.path.join(ROOT, "extensions", "awx")

ALLOWED_TYPES = {
    "text": str, "textarea": str, "password": str,
    "multiplechoice": str, "multiselect": str,
    "integer": int, "float": float,
}

# survey file -> (playbook, the extra vars it must ask for; None: any subset the playbook reads)
SURVEYS = {
    "resize-survey.json": ("playbooks/resize.yml",
                           {"instance", "flavor", "mode", "target_host", "confirm", "bandwidth_limit", "precopy"}),
    "confirm-survey.json": ("playbooks/confirm.yml", {"instance"}),
    "revert-survey.json": ("playbooks/revert.yml", {"instance", "reason"}),
    "batch-survey.json": ("playbooks/batch.yml", None),
    "drain-survey.json": ("playbooks/drain.yml", {"host", "undo", "confirm"}),
}


def _choices(item):
    choices = item["choices"]
    if isinstance(choices, str):
        return [c for c in choices.splitlines() if c.strip()]
    return list(choices)


def check_question(idx, item, seen):
    """Problems of one survey question, as AWX would report them."""
    if not isinstance(item, dict):
        return ["question %d is not a JSON object" % idx]
    problems = []
    for field, kind in (("type", str), ("question_name", str), ("variable", str), ("required", bool)):
        if field not in item:
            problems.append("question %d: %r missing" % (idx, field))
        elif not isinstance(item[field], kind):
            problems.append("question %d: %r must be a %s" % (idx, field, kind.__name__))
    if problems:
        return problems
    if item["variable"] in seen:
        problems.append("question %d: variable %r duplicated" % (idx, item["variable"]))
    seen.add(item["variable"])
    qtype = item["type"]
    if qtype not in ALLOWED_TYPES:
        return problems + ["question %d: type %r is not one of %s" % (idx, qtype, ", ".join(ALLOWED_TYPES))]
    default = item.get("default", "")
    if default != "" and not isinstance(default, ALLOWED_TYPES[qtype]):
        problems.append("question %d: default %r is not a %s" % (idx, default, ALLOWED_TYPES[qtype].__name__))
    for key in ("min", "max"):
        if item.get(key) is not None and (isinstance(item[key], bool) or not isinstance(item[key], int)):
            problems.append("question %d: %s must be an integer" % (idx, key))
    if not item.get("question_description"):
        problems.append("question %d: question_description is empty" % idx)
    if qtype in ("multiplechoice", "multiselect"):
        if "choices" not in item or not _choices(item):
            return problems + ["question %d: %s needs choices" % (idx, qtype)]
        defaults = [d for d in default.splitlines() if d.strip()] if isinstance(default, str) else list(default)
        if qtype == "multiplechoice" and len(defaults) > 1:
            problems.append("question %d: multiplechoice has more than one default" % idx)
        if any(d not in _choices(item) for d in defaults):
            problems.append("question %d: default %r is not among the choices" % (idx, default))
    if qtype == "text" and default != "":
        low, high = item.get("min"), item.get("max")
        if (low is not None and len(default) < low) or (high is not None and len(default) > high):
            problems.append("question %d: default %r is outside min/max length" % (idx, default))
    return problems


def check_survey(path, playbook, expected):
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, ValueError) as exc:
        return ["cannot read: %s" % exc]
    problems = []
    for field, kind in (("name", str), ("description", str), ("spec", list)):
        if field not in spec:
            problems.append("field %r missing" % field)
        elif not isinstance(spec[field], kind):
            problems.append("field %r must be a %s" % (field, kind.__name__))
    if problems:
        return problems
    if not spec["spec"]:
        return ["'spec' has no questions"]
    seen = set()
    for idx, item in enumerate(spec["spec"]):
        problems += check_question(idx, item, seen)
    with open(os.path.join(ROOT, playbook), encoding="utf-8") as f:
        text = f.read()
    for var in sorted(seen):
        if not re.search(r"\b%s\b" % re.escape(var), text):
            problems.append("variable %r is not used by %s" % (var, playbook))
    if expected is not None and seen != expected:
        problems.append("asks %s, but %s takes %s" % (sorted(seen), playbook, sorted(expected)))
    return problems


def main():
    failed = False
    for name, (playbook, expected) in sorted(SURVEYS.items()):
        for problem in check_survey(os.path.join(AWX, name), playbook, expected):
            print("extensions/awx/%s: %s" % (name, problem))
            failed = True
    unknown = sorted(set(f for f in os.listdir(AWX) if f.endswith("-survey.json")) - set(SURVEYS))
    for name in unknown:
        print("extensions/awx/%s: not checked (add it to SURVEYS in %s)" % (name, os.path.basename(__file__)))
        failed = True
    if not failed:
        print("check_awx.py: %d surveys OK" % len(SURVEYS))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

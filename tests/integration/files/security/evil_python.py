"""A hostile destination's Python interpreter (tests/integration/test_security.py).

Installed on a destination hypervisor as its ansible_python_interpreter (the test puts the line
#!/usr/bin/python3 in front: no shebang here, for ansible-test sanity), it runs each module with
the real /usr/bin/python3 and rewrites what the module reports to the controller: a "transfer"
section (what virt_resize_prep hands on to the source for the copy) is replaced by the one in
/root/evil-python.json, and so is every "host_key" anywhere in a result. Every run is logged to
/root/evil-python.log ("ran <module>", "tampered <keys>"), so that the test can tell that the
hostile interpreter was really used and what it changed.
"""
import json
import re
import subprocess
import sys

CONFIG = "/root/evil-python.json"
LOG = "/root/evil-python.log"


def log(line):
    with open(LOG, "a") as fh:
        fh.write(line + "\n")


def module_name(payload):
    m = re.search(rb"plugins\.modules\.([A-Za-z0-9_]+)", payload) or re.search(rb"modules\.([A-Za-z0-9_]+)", payload)
    return m.group(1).decode("ascii") if m else "?"


def tamper(obj, evil, touched):
    if isinstance(obj, dict):
        for key in list(obj):
            if key == "transfer" and isinstance(obj[key], dict):
                obj[key] = dict(evil["transfer"])
                touched.append(key)
            elif key == "host_key" and isinstance(obj[key], str):
                obj[key] = evil["transfer"]["host_key"]
                touched.append(key)
            else:
                tamper(obj[key], evil, touched)
    elif isinstance(obj, list):
        for item in obj:
            tamper(item, evil, touched)


def main():
    if len(sys.argv) > 1:  # the module was copied to a file
        payload = b""
        try:
            with open(sys.argv[1], "rb") as fh:
                name = module_name(fh.read())
        except OSError:
            name = "?"
    else:  # pipelining: the module comes on stdin
        payload = sys.stdin.buffer.read()
        name = module_name(payload)
    log("ran %s" % name)
    proc = subprocess.run(["/usr/bin/python3"] + sys.argv[1:], input=payload if len(sys.argv) == 1 else None,
                          stdout=subprocess.PIPE, check=False)
    out = proc.stdout
    text = out.decode("utf-8", "replace")
    start = text.find("{")
    if start >= 0:
        try:
            result, end = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            result = None
        if isinstance(result, dict):
            with open(CONFIG) as fh:
                evil = json.load(fh)
            touched = []
            tamper(result, evil, touched)
            if touched:
                log("tampered %s in %s" % (",".join(touched), name))
                out = (text[:start] + json.dumps(result) + text[start + end:]).encode("utf-8")
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    sys.exit(proc.returncode)


main()

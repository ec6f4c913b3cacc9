#!/usr/bin/env python3
"""Shows scripts/check_layers.py failing on a tree made to break both rules (and passing on the same tree mended):
an upward include (low -> high) must be named by file and line, and a cycle between two components reported."""
import os
import subprocess
import sys
import tempfile

checker = sys.argv[1]


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)


def run(root):
    p = subprocess.run([sys.executable, checker, '--layers', os.path.join(root, 'layers.txt'), '--root', root],
                       capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


failures = []
with tempfile.TemporaryDirectory() as root:
    write(root, 'layers.txt', 'low|daemon/low|low/|\nhigh|daemon/high|high/|low\n')
    write(root, 'daemon/low/a.h', '#pragma once\n#include <vector>\n#include "high/b.h"\n')
    write(root, 'daemon/high/b.h', '#pragma once\n#include "low/a.h"\n')
    write(root, 'daemon/low/c.h', '#pragma once\n#include "low/d.h"\n')
    write(root, 'daemon/low/d.h', '#pragma once\n')
    write(root, 'daemon/low/d.cc', '#include "low/d.h"\n#include "low/c.h"\n')
    code, out = run(root)
    if code == 0:
        failures.append('the broken tree passed')
    if 'daemon/low/a.h:3: includes "high/b.h" of layer high' not in out:
        failures.append('the upward include was not named by file and line')
    if 'include cycle between daemon/low/c, daemon/low/d' not in out or 'daemon/low/d.cc:2' not in out:
        failures.append('the cycle c <-> d was not reported with its include line')
    if 'include cycle between daemon/high/b, daemon/low/a' not in out:
        failures.append('the cycle a <-> b was not reported')
    # Mended: the upward include and the cycle removed.
    write(root, 'daemon/low/a.h', '#pragma once\n#include <vector>\n')
    write(root, 'daemon/low/d.cc', '#include "low/d.h"\n')
    code2, out2 = run(root)
    if code2 != 0:
        failures.append('the mended tree failed: ' + out2)

print(out)
assert not failures, 'FAILED: ' + '; '.join(failures)
print('the check fails on an upward include and a cycle, naming file and line, and passes once they are gone')

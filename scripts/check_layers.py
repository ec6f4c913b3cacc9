#!/usr/bin/env python3
"""Checks the layering of the source tree against the layer table the build writes (build/layers.txt).

Each table line is `target|folder|include prefixes|layers it links`, one per atelier_layer() call. Two rules:
  1. A file may include (with "...") only headers of its own layer or of a layer it links, directly or through
     other layers. A violation is reported as `file:line: ...` naming both layers.
  2. No include cycle between components (a component is a .h and its .cc, e.g. engine/io/tensor_file): every
     cycle is reported with the include lines that close it.
Exits 1 when anything is found, 0 otherwise.
"""
import argparse
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
SOURCE_EXTENSIONS = ('.h', '.hpp', '.cc', '.c', '.inc')


class Layer:
    def __init__(self, line):
        target, folder, prefixes, depends = (line.split('|') + ['', '', '', ''])[:4]
        self.target = target.strip()
        self.folder = folder.strip().rstrip('/')
        self.prefixes = [p for p in prefixes.split(',') if p and p != '-']
        self.depends = [d for d in depends.split(',') if d]


def read_layers(path):
    layers = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith('#'):
                layer = Layer(line)
                layers[layer.target] = layer
    return layers


def closure(layers, target):
    seen, stack = set(), [target]
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in layers:
            stack.extend(layers[t].depends)
    return seen


def layer_of_file(layers, rel):
    best = None
    for layer in layers.values():
        if layer.folder and (rel == layer.folder or rel.startswith(layer.folder + '/')):
            if best is None or len(layer.folder) > len(best.folder):
                best = layer
    return best


def layer_of_include(layers, include):
    best, best_len = None, -1
    for layer in layers.values():
        for prefix in layer.prefixes:
            if include.startswith(prefix) and len(prefix) > best_len:
                best, best_len = layer, len(prefix)
    return best


def component(rel):
    return os.path.splitext(rel)[0]


def resolve(root, rel, include):
    """The repository path an include names, or None (system or generated headers)."""
    candidates = [os.path.join(os.path.dirname(rel), include), os.path.join('daemon', include),
                  os.path.join('daemon', 'include', include)]
    for c in candidates:
        c = os.path.normpath(c)
        if os.path.isfile(os.path.join(root, c)):
            return c
    return None


def find_cycles(graph):
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    counter = [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, {}))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                scc = []
                while True:
                    n = stack.pop()
                    on_stack.discard(n)
                    scc.append(n)
                    if n == node:
                        break
                if len(scc) > 1:
                    result.append(sorted(scc))
    return result


def check(root, layers):
    problems = []
    graph = {}  # component -> {component: (file, line)}
    for layer in sorted(layers.values(), key=lambda l: l.folder):
        folder = os.path.join(root, layer.folder)
        if not layer.folder or not os.path.isdir(folder):
            continue
        for dirpath, _, files in os.walk(folder):
            for name in sorted(files):
                if not name.endswith(SOURCE_EXTENSIONS):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                owner = layer_of_file(layers, rel)
                if owner is not layer:
                    continue  # a deeper layer owns this file
                allowed = closure(layers, owner.target)
                with open(os.path.join(root, rel), encoding='utf-8', errors='replace') as f:
                    for number, text in enumerate(f, 1):
                        m = INCLUDE.match(text)
                        if not m:
                            continue
                        include = m.group(1)
                        target = layer_of_include(layers, include)
                        if target is not None and target.target not in allowed:
                            problems.append(
                                f'{rel}:{number}: includes "{include}" of layer {target.target} ({target.folder}), '
                                f'which layer {owner.target} does not link (it links: '
                                f'{", ".join(sorted(allowed - {owner.target})) or "nothing"})')
                        resolved = resolve(root, rel, include)
                        if resolved and component(resolved) != component(rel):
                            graph.setdefault(component(rel), {}).setdefault(component(resolved), (rel, number))
    for scc in find_cycles(graph):
        members = set(scc)
        edges = [f'{graph[a][b][0]}:{graph[a][b][1]} ({a} -> {b})'
                 for a in scc for b in sorted(graph.get(a, {})) if b in members]
        problems.append(f'include cycle between {", ".join(scc)}: ' + '; '.join(edges))
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--layers', required=True, help='the layer table (build/layers.txt)')
    parser.add_argument('--root', required=True, help='the repository root')
    args = parser.parse_args()
    layers = read_layers(args.layers)
    if not layers:
        print(f'{args.layers}: no layers', file=sys.stderr)
        return 1
    problems = check(args.root, layers)
    for p in problems:
        print(p)
    if problems:
        print(f'{len(problems)} layering problem(s)', file=sys.stderr)
        return 1
    print(f'layering: {len(layers)} layers, no upward include, no cycle')
    return 0


if __name__ == '__main__':
    sys.exit(main())

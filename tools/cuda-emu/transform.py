#!/usr/bin/env python3
"""Rewrites a CUDA source (.cu / .cuh) so that g++ compiles it for the host emulator.

  python3 transform.py SRC OUT             one file
  python3 transform.py --registry OUT SRC…  the list of every __global__ kernel in SRC…

Three rewrites, nothing else (the kernels run as written):
  * `kernel<<<grid, block[, shm[, stream]]>>>(args);` becomes
    `::emu::launch(site, [&]() { kernel(args); }, grid, block[, shm[, stream]]);`
    where `site` names the kernel, the file, the line and its __launch_bounds__;
  * `__shared__ T a[..], b;` becomes a reference into the block's shared-memory arena
    (emu_runtime.cpp), so the emulator knows every shared array: it poisons it at block start,
    checks bounds, reads before writes and races between barriers;
  * `extern __shared__ T a[];` becomes a pointer to the block's dynamic shared memory.
`#include "x.cuh"` lines are left alone: the build transforms every .cuh into the same relative
place, so the includes find the transformed headers first.
"""
import re
import sys

IDENT = r'[A-Za-z_]\w*'
KERNEL_DEF = re.compile(r'__global__\s+void\s+(?:__launch_bounds__\s*\(([^()]*(?:\([^()]*\)[^()]*)*)\)\s*)?(' + IDENT + r')\s*\(')
LAUNCH = re.compile(r'(' + IDENT + r'(?:::' + IDENT + r')*)\s*(<[^<>;]*?>)?\s*<<<')


def fail(msg):
    sys.stderr.write('transform.py: %s\n' % msg)
    sys.exit(1)


def matching(src, i, open_ch, close_ch):
    """Index of the bracket closing the one at src[i]."""
    depth = 0
    for j in range(i, len(src)):
        if src[j] == open_ch:
            depth += 1
        elif src[j] == close_ch:
            depth -= 1
            if depth == 0:
                return j
    fail('unbalanced %s at offset %d' % (open_ch, i))


def split_top(text, sep=','):
    """Splits at `sep` outside (), [], {}, <> nesting."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in '([{':
            depth += 1
        elif ch in ')]}':
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(''.join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append(''.join(cur))
    return parts


def kernels_in(src):
    """[(name, launch bound text or None)] of every __global__ definition or declaration."""
    return [(m.group(2), m.group(1)) for m in KERNEL_DEF.finditer(src)]


def line_of(src, i):
    return src.count('\n', 0, i) + 1


def rewrite_launches(src, path, bounds):
    out, i = [], 0
    while True:
        m = LAUNCH.search(src, i)
        if not m:
            out.append(src[i:])
            return ''.join(out)
        out.append(src[i:m.start()])
        name, targs = m.group(1), m.group(2) or ''
        j = src.index('>>>', m.end())
        cfg = src[m.end():j]
        k = j + 3
        while src[k].isspace():
            k += 1
        if src[k] != '(':
            fail('%s:%d: expected ( after the launch configuration' % (path, line_of(src, k)))
        e = matching(src, k, '(', ')')
        args = src[k + 1:e]
        base = name.split('::')[-1]
        bound = bounds.get(base)
        site = '::emu::LaunchSite{"%s", __FILE__, %d, %s}' % (
            base, line_of(src, m.start()), '(%s)' % bound if bound else '0')
        nconfig = len(split_top(cfg))
        if not 2 <= nconfig <= 4:
            fail('%s:%d: a launch takes 2 to 4 configuration values, got %d' % (path, line_of(src, m.start()), nconfig))
        out.append('::emu::launch(%s, [&]() { %s%s(%s); }, %s)' % (site, name, targs, args, cfg))
        i = e + 1


SHARED = re.compile(r'(extern\s+)?__shared__\b')


def rewrite_shared(src, path):
    out, i = [], 0
    while True:
        m = SHARED.search(src, i)
        if not m:
            out.append(src[i:])
            return ''.join(out)
        out.append(src[i:m.start()])
        end = src.index(';', m.end())
        decl = src[m.end():end].strip()
        line = line_of(src, m.start())
        # Everything before the first declarator's name is the type.
        first = split_top(decl)[0].strip()
        dm = re.match(r'^(.*?)(' + IDENT + r')\s*((?:\[[^\]]*\]\s*)*)$', first, re.S)
        if not dm or not dm.group(1).strip():
            fail('%s:%d: cannot parse the shared declaration "%s"' % (path, line, decl))
        type_ = dm.group(1).strip()
        decls = [first[len(dm.group(1)):]] + [d.strip() for d in split_top(decl)[1:]]
        stmts = []
        for d in decls:
            dd = re.match(r'^(' + IDENT + r')\s*((?:\[[^\]]*\]\s*)*)$', d.strip(), re.S)
            if not dd:
                fail('%s:%d: cannot parse the shared declarator "%s"' % (path, line, d))
            name, dims = dd.group(1), re.sub(r'\s+', '', dd.group(2))
            site = 'emu_shared_site_%s_%d' % (name, line)
            if m.group(1):  # extern __shared__: the launch's dynamic shared memory
                if dims != '[]':
                    fail('%s:%d: extern __shared__ %s must be an array of unknown bound' % (path, line, name))
                stmts.append('%s* %s = static_cast<%s*>(::emu::dynamic_shared(alignof(%s)));' % (
                    type_, name, type_, type_))
                continue
            full = '%s%s' % (type_, dims)
            ref = '(&%s)%s' % (name, dims) if dims else '&' + name
            ptr = '%s(*)%s' % (type_, dims) if dims else type_ + '*'
            stmts.append(
                'static constexpr ::emu::SharedSite %s{"%s", __FILE__, %d}; '
                '%s %s = *static_cast<%s>(::emu::shared_alloc(%s, sizeof(%s), alignof(%s)))' % (
                    site, name, line, type_, ref, ptr, site, full, type_))
        # One line for the whole declaration, then the newlines it spanned, so later lines keep
        # their numbers.
        out.append(' '.join(s if s.endswith(';') else s + ';' for s in stmts)[:-1])
        out.append('\n' * decl.count('\n'))
        i = end  # keep the ';'


def transform(path):
    src = open(path, encoding='utf-8').read()
    bounds = {name: bound for name, bound in kernels_in(src) if bound}
    # __launch_bounds__ is read above; emu.h defines it away.
    src = rewrite_launches(src, path, bounds)
    src = rewrite_shared(src, path)
    return '#line 1 "%s"\n%s' % (path, src)


def registry(sources):
    names = {}
    for path in sources:
        for name, _ in kernels_in(open(path, encoding='utf-8').read()):
            names.setdefault(name, path)
    rows = ''.join('  {"%s", "%s"},\n' % (n, names[n]) for n in sorted(names))
    return ('// Generated by tools/cuda-emu/transform.py: every __global__ kernel of the emulated sources.\n'
            '#include "emu_registry.h"\n'
            'namespace emu {\nconst KernelInfo kKernels[] = {\n%s};\n'
            'const int kKernelCount = %d;\n}  // namespace emu\n' % (rows, len(names)))


def main(argv):
    if len(argv) >= 3 and argv[1] == '--registry':
        text = registry(argv[3:])
        out = argv[2]
    elif len(argv) == 3:
        text = transform(argv[1])
        out = argv[2]
    else:
        fail('usage: transform.py SRC OUT | --registry OUT SRC...')
    with open(out, 'w', encoding='utf-8') as f:
        f.write(text)


if __name__ == '__main__':
    main(sys.argv)

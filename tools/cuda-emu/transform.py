# Rewrites CUDA launches `k<<<g, b, shm, s>>>(args);` into emu::launch calls so a
# .cu file compiles with g++ for the host emulator.
import re, sys
src = open(sys.argv[1]).read()
out = []
i = 0
pat = re.compile(r'([A-Za-z_][\w:]*(?:<[^<>;]*?>)?)<<<')
while True:
    m = pat.search(src, i)
    if not m:
        out.append(src[i:]); break
    out.append(src[i:m.start()])
    name = m.group(1)
    j = src.index('>>>', m.end())
    cfg = src[m.end():j]
    k = j + 3
    while src[k].isspace(): k += 1
    assert src[k] == '(', src[k:k+40]
    depth = 0; e = k
    while True:
        ch = src[e]
        if ch == '(': depth += 1
        elif ch == ')':
            depth -= 1
            if depth == 0: break
        e += 1
    args = src[k+1:e]
    out.append('emu::launch(%s, [&]() { %s(%s); })' % (cfg, name, args))
    i = e + 1
sys.stdout.write(''.join(out))

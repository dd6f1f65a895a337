'use strict';
// One fuzz child process: runs the cases it is given, one after the other, and reports each on
// file descriptor 3 as one JSON line: {"i":7,"start":true} when it begins, then
// {"i":7,"kind":"weights","cat":"typed","code":"E_WEIGHTS_FILE"}. The parent (run.js) times each
// started case and notices when this process dies: a case that started and never reported is the
// one that crashed or hung. Writes are synchronous so a crash loses nothing already reported.
//
//   node test/fuzz/child.js --lib dist --seed 1 --cases 0,1,2 [--self-test]

const { writeSync } = require('node:fs');
const { resolve } = require('node:path');
const { makeAssets, makeCase } = require('./cases');

// MghfErrorCode (lib/errors.ts).
const KNOWN_CODES = new Set([
  'E_ARGUMENT', 'E_SHAPE', 'E_DTYPE', 'E_NONFINITE', 'E_RANGE', 'E_LIMIT', 'E_TOO_SMALL', 'E_OPTION', 'E_WEIGHTS',
  'E_WEIGHTS_FILE', 'E_DATA', 'E_UNSUPPORTED', 'E_NATIVE', 'E_CUDA', 'E_CUDA_OOM', 'E_LOAD', 'E_NUMERIC', 'E_ABORTED',
]);

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : process.argv[i + 1];
}

const report = (o) => writeSync(3, JSON.stringify(o) + '\n');

function text(err) {
  try {
    const name = err && err.constructor && err.constructor.name;
    return `${name || typeof err}: ${String((err && err.message) || err).split('\n')[0]}`.slice(0, 300);
  } catch {
    return 'an error that cannot be described';
  }
}

/** The path of the first NaN/±Infinity in what a call returned, or undefined. */
function nonFinite(v, path = 'result', depth = 0) {
  if (typeof v === 'number') return Number.isFinite(v) ? undefined : `${path} = ${v}`;
  if (v === null || typeof v !== 'object' || depth > 4) return undefined;
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
    for (let i = 0; i < v.length; i++) if (typeof v[i] === 'number' && !Number.isFinite(v[i])) return `${path}[${i}] = ${v[i]}`;
    return undefined;
  }
  for (const [k, x] of Object.entries(v)) {
    const bad = nonFinite(x, `${path}.${k}`, depth + 1);
    if (bad) return bad;
  }
  return undefined;
}

async function main() {
  const libDir = resolve(arg('lib', resolve(__dirname, '..', '..', 'dist')));
  const seed = Number(arg('seed', '1'));
  const indices = arg('cases', '').split(',').filter(Boolean).map(Number);
  const selfTest = process.argv.includes('--self-test');
  const assets = makeAssets(libDir);
  const { MghfError } = assets.lib;
  let current;
  // Errors nobody awaited surface here: they belong to the case that was running (or just ran).
  const late = (err) => report({ i: current, late: text(err) });
  process.on('unhandledRejection', late);
  process.on('uncaughtException', late);
  try {
    for (const i of indices) {
      current = i;
      const c = makeCase(seed, i, selfTest);
      report({ i, start: true, kind: c.kind });
      const ctx = { notes: [] };
      // MGHF_FUZZ_TRACE=1: each note on stderr as it is made (what a case was doing when it hung).
      if (process.env.MGHF_FUZZ_TRACE) {
        ctx.notes.push = (...x) => {
          process.stderr.write(`#${i} ${c.kind}: ${x.join(' ')}\n`);
          return Array.prototype.push.apply(ctx.notes, x);
        };
      }
      let result;
      try {
        const value = await c.run(assets, ctx);
        const bad = nonFinite(value);
        result = bad ? { cat: 'nonfinite', detail: bad } : { cat: 'ok' };
      } catch (err) {
        result = err instanceof MghfError && KNOWN_CODES.has(err.code) ? { cat: 'typed', code: err.code } : { cat: 'other', detail: text(err) };
      }
      report({ i, kind: c.kind, ...result, ...(ctx.notes.length ? { note: ctx.notes.join('; ').slice(0, 400) } : {}) });
    }
  } finally {
    assets.cleanup();
  }
  // No process.exit(): a process that cannot end by itself (a handle left open) is a hang too.
}

main().catch((err) => {
  process.stderr.write(`fuzz child: ${(err && err.stack) || err}\n`);
  process.exitCode = 70;
});

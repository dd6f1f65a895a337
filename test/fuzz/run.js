#!/usr/bin/env node
'use strict';
// The fuzz harness of issue 13: `npm run fuzz -- --cases N [--seed S] [--timeout-ms T]`.
//
// Runs N seeded cases (cases.js) in child processes (child.js), several per child to keep the
// start-up cost down, and counts each outcome:
//
//   ok            the call returned, every number finite
//   typed         an MghfError with a known code
//   other         anything else thrown (a raw TypeError, RangeError, …)
//   crash         the child died (a signal, an abort) during the case
//   hang          the case ran past --timeout-ms (or its child never exited)
//   nonfinite     a returned loss, part, gradient or feature was NaN or ±Infinity
//
// and exits 1 when any of the last four is not zero. A death or a hang is attributed to the case
// that had started and not finished; the case is then run again alone in a fresh child to say
// whether it fails by itself, and the rest of the batch continues in a new child. A child that
// dies or hangs between cases has its batch re-run one case per child to find the culprit.
//
// Options: --cases N (200)  --seed S (random, printed)  --timeout-ms T (20000)  --batch B (40)
//          --jobs J (CPU count)  --lib DIR (dist/)  --only I,J  (replay some cases)
//          --json (print the summary as JSON)  --self-test

const { spawn } = require('node:child_process');
const { availableParallelism } = require('node:os');
const { resolve } = require('node:path');

const CHILD = resolve(__dirname, 'child.js');
const BAD = ['other', 'crash', 'hang', 'nonfinite'];
const CATEGORIES = ['ok', 'typed', ...BAD];

function parseArgs(argv) {
  const o = {
    cases: 200, seed: undefined, timeoutMs: 20_000, batch: 40, jobs: availableParallelism(),
    lib: resolve(__dirname, '..', '..', 'dist'), only: undefined, json: false, selfTest: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) usage(`${a} needs a value`);
      return v;
    };
    const int = (min) => {
      const v = Number(value());
      if (!Number.isSafeInteger(v) || v < min) usage(`${a} must be an integer ≥ ${min}`);
      return v;
    };
    if (a === '--cases') o.cases = int(1);
    else if (a === '--seed') o.seed = int(0);
    else if (a === '--timeout-ms') o.timeoutMs = int(100);
    else if (a === '--batch') o.batch = int(1);
    else if (a === '--jobs') o.jobs = int(1);
    else if (a === '--lib') o.lib = resolve(value());
    else if (a === '--only') o.only = value().split(',').map(Number);
    else if (a === '--json') o.json = true;
    else if (a === '--self-test') o.selfTest = true;
    else if (a === '--help' || a === '-h') usage();
    else usage(`unknown argument ${a}`);
  }
  if (o.seed === undefined) o.seed = Math.floor(Math.random() * 2 ** 31);
  return o;
}

function usage(problem) {
  if (problem) process.stderr.write(`fuzz: ${problem}\n`);
  process.stderr.write('Usage: npm run fuzz -- --cases N [--seed S] [--timeout-ms T] [--batch B] [--jobs J] [--only I,J] [--json]\n');
  process.exit(problem ? 2 : 0);
}

/**
 * Runs `indices` in one child. Resolves with the results it reported and how it ended: `hang`
 * (the index that ran past the timeout), `pending` (the index that had started when the child
 * died), `exit` { code, signal }, `exitHang` (all reported but the process did not end).
 */
function runChild(o, indices) {
  return new Promise((done) => {
    const args = [CHILD, '--lib', o.lib, '--seed', String(o.seed), '--cases', indices.join(',')];
    if (o.selfTest) args.push('--self-test');
    const env = { ...process.env, MGHF_NUM_THREADS: process.env.MGHF_NUM_THREADS ?? '1' };
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe'], env });
    const results = new Map();
    let pending;
    let hang;
    const kinds = new Map();
    let exitHang = false;
    let timer;
    let stderr = '';
    let buffered = '';
    const arm = (onTimeout) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        onTimeout();
        child.kill('SIGKILL');
      }, o.timeoutMs);
    };
    child.stderr.on('data', (d) => {
      stderr = (stderr + d).slice(-4000);
    });
    child.stdio[3].on('data', (d) => {
      buffered += d;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        let m;
        try {
          m = JSON.parse(line);
        } catch {
          continue;
        }
        if (m.start) {
          pending = m.i;
          kinds.set(m.i, m.kind);
          arm(() => (hang = m.i));
        } else if (m.late !== undefined) {
          // An error that surfaced outside any await: untyped, whatever it was.
          const i = m.i ?? indices[0];
          results.set(i, { ...(results.get(i) ?? {}), cat: 'other', detail: `thrown asynchronously: ${m.late}` });
        } else {
          if (!results.has(m.i) || results.get(m.i).cat !== 'other') results.set(m.i, m);
          pending = undefined;
          if (results.size >= indices.length) arm(() => (exitHang = true));
          else clearTimeout(timer);
        }
      }
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      done({ results, kinds, pending: hang === undefined ? pending : undefined, hang, exitHang, exit: { code, signal }, stderr });
    });
  });
}

const diedText = (exit) => (exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`);
const lastLine = (s) => s.trim().split('\n').filter(Boolean).slice(-1)[0] ?? '';

/** Every index of `indices` classified, surviving crashes and hangs (see the header). */
async function runBatch(o, indices) {
  const results = new Map();
  let remaining = indices;
  while (remaining.length > 0) {
    const r = await runChild(o, remaining);
    for (const [i, m] of r.results) results.set(i, m);
    const abnormal = r.exit.code !== 0 || r.exit.signal !== null;
    if (r.hang !== undefined) {
      results.set(r.hang, { i: r.hang, kind: r.kinds.get(r.hang), cat: 'hang', detail: `no result after ${o.timeoutMs} ms` });
    } else if (abnormal && r.pending !== undefined && !r.exitHang) {
      const alone = remaining.length > 1 ? await runChild(o, [r.pending]) : r;
      const soloDied = alone.exit.code !== 0 || alone.exit.signal !== null || alone.hang !== undefined;
      const soloText = alone === r ? '' : soloDied ? `; alone too (${diedText(alone.exit)})` : `; alone it did not (${alone.results.get(r.pending)?.cat})`;
      results.set(r.pending, { i: r.pending, kind: r.kinds.get(r.pending), cat: 'crash', detail: `${diedText(r.exit)} during this case${soloText}: ${lastLine(r.stderr)}` });
    } else if (abnormal || r.exitHang) {
      // Died or hung between cases or at exit: find the culprit one case per child.
      await isolate(o, remaining, results, r);
      return results;
    }
    const next = remaining.filter((i) => !results.has(i));
    if (next.length === remaining.length) {
      // No progress at all (the child cannot even start): report rather than loop.
      for (const i of next) results.set(i, { i, cat: 'crash', detail: `child failed before any case (${diedText(r.exit)}): ${lastLine(r.stderr)}` });
      return results;
    }
    remaining = next;
  }
  return results;
}

async function isolate(o, indices, results, batch) {
  let found = false;
  for (const i of indices) {
    const r = await runChild(o, [i]);
    const m = r.results.get(i);
    if (r.hang !== undefined || r.exitHang) {
      results.set(i, { i, kind: r.kinds.get(i), cat: 'hang', detail: r.exitHang ? 'the process did not exit after this case' : `no result after ${o.timeoutMs} ms` });
      found = true;
    } else if (r.exit.code !== 0 || r.exit.signal !== null) {
      results.set(i, { i, kind: r.kinds.get(i), cat: 'crash', detail: `${diedText(r.exit)}${m ? ' after reporting' : ''}: ${lastLine(r.stderr)}` });
      found = true;
    } else if (m) {
      results.set(i, m);
    }
  }
  if (!found) {
    const last = indices[indices.length - 1];
    const cat = batch.exitHang ? 'hang' : 'crash';
    results.set(last, { i: last, cat, detail: `the batch's child ${batch.exitHang ? 'did not exit' : diedText(batch.exit)} between cases; no case fails alone` });
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const indices = o.only ?? Array.from({ length: o.cases }, (_, i) => i);
  const batches = [];
  for (let k = 0; k < indices.length; k += o.batch) batches.push(indices.slice(k, k + o.batch));
  const started = Date.now();
  if (!o.json) {
    process.stderr.write(`mghf fuzz: seed ${o.seed}, ${indices.length} cases, ${o.jobs} jobs × batches of ${o.batch}, timeout ${o.timeoutMs} ms\n`);
  }
  const all = new Map();
  let next = 0;
  let finished = 0;
  const worker = async () => {
    while (next < batches.length) {
      const batch = batches[next++];
      for (const [i, m] of await runBatch(o, batch)) all.set(i, m);
      finished += batch.length;
      if (!o.json && process.stderr.isTTY) process.stderr.write(`\r${finished}/${indices.length}`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.jobs, batches.length) }, worker));
  if (!o.json && process.stderr.isTTY) process.stderr.write('\r');

  const counts = Object.fromEntries(CATEGORIES.map((c) => [c, 0]));
  const codes = {};
  const kinds = {};
  const failures = [];
  for (const i of indices) {
    const m = all.get(i) ?? { i, cat: 'crash', detail: 'no result' };
    counts[m.cat]++;
    if (m.code) codes[m.code] = (codes[m.code] ?? 0) + 1;
    const k = (kinds[m.kind ?? '?'] ??= {});
    k[m.cat] = (k[m.cat] ?? 0) + 1;
    if (BAD.includes(m.cat)) failures.push({ i, kind: m.kind, cat: m.cat, detail: m.detail, note: m.note });
  }
  const seconds = (Date.now() - started) / 1000;
  const summary = { seed: o.seed, cases: indices.length, seconds, counts, codes, kinds, failures };
  if (o.json) {
    process.stdout.write(JSON.stringify(summary) + '\n');
  } else {
    const out = [];
    const line = (label, n, extra = '') => out.push(`  ${label.padEnd(14)}${String(n).padStart(7)}${extra}`);
    line('ok', counts.ok);
    line('typed errors', counts.typed, `   (${Object.entries(codes).sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c} ${n}`).join(', ')})`);
    line('other errors', counts.other);
    line('crashes', counts.crash);
    line('hangs', counts.hang);
    line('non-finite', counts.nonfinite);
    out.push(`  by kind: ${Object.entries(kinds).map(([k, c]) => `${k} ${Object.entries(c).map(([cat, n]) => `${cat} ${n}`).join('/')}`).join('; ')}`);
    for (const f of failures.slice(0, 30)) {
      out.push(`  #${f.i} ${f.kind ?? '?'} ${f.cat}: ${f.detail ?? ''}${f.note ? ` [${f.note}]` : ''}`);
    }
    if (failures.length > 30) out.push(`  … ${failures.length - 30} more`);
    if (failures.length > 0) out.push(`  replay one: npm run fuzz -- --seed ${o.seed} --only ${failures[0].i}`);
    out.push(`  ${indices.length} cases in ${seconds.toFixed(1)} s`);
    process.stdout.write(out.join('\n') + '\n');
  }
  process.exitCode = BAD.some((c) => counts[c] > 0) ? 1 : 0;
}

main().catch((err) => {
  process.stderr.write(`fuzz: ${(err && err.stack) || err}\n`);
  process.exitCode = 2;
});

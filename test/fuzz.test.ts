// A short, seeded run of the fuzz harness (test/fuzz/, `npm run fuzz`) in every `npm test`, and a
// self-test showing that the harness counts and attributes each kind of failure.

import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

const RUN = resolve(__dirname, 'fuzz', 'run.js');
const DIST = resolve(__dirname, '..', 'dist', 'index.js');
const skip = existsSync(DIST) ? false : `${DIST} does not exist yet (run npm run build)`;

interface Summary {
  seconds: number;
  counts: Record<'ok' | 'typed' | 'other' | 'crash' | 'hang' | 'nonfinite', number>;
  codes: Record<string, number>;
  kinds: Record<string, Record<string, number>>;
  failures: { i: number; kind?: string; cat: string; detail?: string; note?: string }[];
}

function fuzz(args: string[]): { status: number | null; summary: Summary; stderr: string } {
  const r = spawnSync(process.execPath, [RUN, '--json', ...args], { encoding: 'utf8', timeout: 300_000 });
  return { status: r.status, summary: JSON.parse(r.stdout) as Summary, stderr: r.stderr };
}

t.test('a seeded fuzz run: only ok and typed errors', { skip }, async (t) => {
  // Every option value in its bounds and every weights file that loads: a finite result or a typed
  // error (E_NUMERIC for weights that overflow the DFE).
  const { status, summary } = fuzz(['--cases', '500', '--seed', '20240613', '--timeout-ms', '30000']);
  t.comment(`500 cases in ${summary.seconds.toFixed(1)} s: ${JSON.stringify(summary.counts)}`);
  t.same(summary.failures, [], 'no untyped error, crash, hang or non-finite result');
  t.equal(status, 0, 'exit 0');
  t.equal(summary.counts.ok + summary.counts.typed, 500, 'every case ok or typed');
  for (const kind of ['weights', 'checkpoint', 'tensor', 'options']) {
    t.ok(summary.kinds[kind], `cases of kind ${kind} ran`);
  }
  t.ok(summary.counts.ok > 50 && summary.counts.typed > 50, 'both outcomes are common (the mutations are neither all fatal nor all harmless)');
  t.ok(summary.codes.E_WEIGHTS_FILE > 0 && summary.codes.E_OPTION > 0 && summary.codes.E_SHAPE > 0, `typed errors of many codes: ${JSON.stringify(summary.codes)}`);
});

t.test('the harness counts and attributes crashes, hangs, untyped errors and non-finite results', { skip }, async (t) => {
  // Self-test cases: index % 10 = 3 aborts, 5 loops for ever, 7 throws a TypeError, 8 returns NaN.
  const { status, summary } = fuzz(['--self-test', '--cases', '20', '--batch', '10', '--timeout-ms', '2000', '--seed', '1']);
  t.equal(status, 1, 'exit 1');
  t.same(summary.counts, { ok: 0, typed: 12, other: 2, crash: 2, hang: 2, nonfinite: 2 });
  const by = (cat: string) => summary.failures.filter((f) => f.cat === cat).map((f) => f.i);
  t.same(by('crash'), [3, 13], 'each crash attributed to its case');
  t.same(by('hang'), [5, 15], 'each hang attributed to its case');
  t.same(by('other'), [7, 17]);
  t.same(by('nonfinite'), [8, 18]);
  t.match(summary.failures.find((f) => f.i === 3)?.detail, /SIGABRT during this case; alone too/);
});

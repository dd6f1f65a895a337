// The command line prints one line for every failure, never a stack trace (issue 13): typed
// errors as they are, anything else (an allocation failure, a bug) by its message.

import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { failureLine } from '../lib/cli';
import { MghfError } from '../lib/errors';

const CLI = resolve(__dirname, '..', 'dist', 'cli.js');
const skip = existsSync(CLI) ? false : `${CLI} does not exist yet (run npm run build)`;

function runCli(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function oneLine(t0: Test, stderr: string, pattern: RegExp, what: string): void {
  const lines = stderr.split('\n').filter((l) => l.length > 0);
  t0.equal(lines.length, 1, `${what}: one line (${JSON.stringify(stderr)})`);
  t0.match(lines[0], /^mghf: /, `${what}: starts with 'mghf: '`);
  t0.match(lines[0], pattern, `${what}: says what went wrong`);
  t0.notMatch(stderr, /\n\s+at /, `${what}: no stack trace`);
}

t.test('failureLine: one line for anything thrown', async (t) => {
  t.equal(failureLine(new MghfError('E_OPTION', 'Expected x for y but received z')), 'mghf: Expected x for y but received z\n');
  const oom = failureLine(new RangeError('Array buffer allocation failed'));
  t.match(oom, /^mghf: out of memory: Array buffer allocation failed \(RangeError\) \(set MGHF_DEBUG=1 for details\)\n$/);
  t.match(failureLine(new Error('first\nsecond')), /^mghf: first \(set MGHF_DEBUG/, 'only the first line of a message');
  t.match(failureLine('a string'), /^mghf: a string /);
  const hostile = { get message(): string { throw new Error('no'); } };
  t.match(failureLine(hostile), /^mghf: /, 'an object whose message getter throws');
});

t.test('mghf score / show on failures', { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mghf-cli-errors-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // The 16000×16000 PNG (one colour: fast to write, 7 MB).
  const huge = join(dir, 'huge.png');
  await sharp({ create: { width: 16000, height: 16000, channels: 3, background: { r: 90, g: 120, b: 200 } } }).png({ compressionLevel: 1 }).toFile(huge);
  const small = join(dir, 'small.png');
  await sharp({ create: { width: 40, height: 40, channels: 3, background: { r: 90, g: 120, b: 200 } } }).png().toFile(small);

  let r = runCli(['score', '--sr', huge, '--gt', huge]);
  t.equal(r.code, 1, 'exit 1');
  oneLine(t, r.stderr, /huge\.png is 16000×16000 pixels: 3\.1 GB as a float32 RGB tensor, over the 1 GiB limit/, 'score on 16000²');
  r = runCli(['show', '--image', huge, '--out', join(dir, 'maps.png')]);
  t.equal(r.code, 1);
  oneLine(t, r.stderr, /16000×16000/, 'show on 16000²');

  const notImage = join(dir, 'x.png');
  writeFileSync(notImage, 'not a png');
  r = runCli(['score', '--sr', notImage, '--gt', small]);
  t.equal(r.code, 1);
  oneLine(t, r.stderr, /Cannot decode image .*x\.png/, 'not an image');

  const dup = join(dir, 'dup.safetensors');
  const json = Buffer.from('{"a":1,"a":2}');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(dup, Buffer.concat([len, json]));
  r = runCli(['score', '--sr', small, '--gt', small, '--weights', dup]);
  t.equal(r.code, 1);
  oneLine(t, r.stderr, /dup\.safetensors: header has the duplicate key "a"/, 'weights with a duplicate key');

  r = runCli(['score', '--sr', small]);
  t.equal(r.code, 2, 'a usage error keeps exit 2');
  t.equal(r.stderr, 'mghf: missing --gt\nrun "npx mghf help score" for usage\n', 'one line and where the usage is, not the usage itself');
});

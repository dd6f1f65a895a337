// The public types: a snippet of user code is type-checked against lib/index.ts with the
// TypeScript compiler. Good calls must compile; each line after `// @ts-expect-error` must not
// (a tensor argument is `Tensor | TensorLike`, not `unknown`). The same snippet with the markers
// removed must fail on exactly those lines, so a marker cannot pass by hiding an unrelated error.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import ts from 'typescript';

const LIB = resolve(__dirname, '..', 'lib', 'index').replace(/\\/g, '/');

const SNIPPET = `
import {
  mghfLoss, mghfLossSync, dfeFeatures, dfeFeaturesSync, estimateCost, featureGrid,
  Tensor, loadImage, loadImages, saveImage, type TensorLike, type ImageLayout, type LossResult,
} from '${LIB}';

declare const x: Tensor;
// The shape of an onnxruntime Tensor: data is a union over every dtype.
declare const ort: { type: 'float32' | 'int64' | 'string'; data: Float32Array | BigInt64Array | string[]; dims: readonly number[]; location: string };
const plain: TensorLike = { type: 'float32', data: new Float32Array(12), dims: [1, 3, 2, 2] };
const layout: ImageLayout = 'NHWC';

export async function good(): Promise<LossResult> {
  await mghfLoss(x, x);
  await mghfLoss(plain, { data: new Float32Array(12), dims: [1, 2, 2, 3] }, { layout });
  await mghfLoss(ort, ort);
  mghfLossSync(await loadImage('sr.png'), await loadImage(Buffer.from([])));
  await dfeFeatures(await loadImages(['a.png', 'b.png'], { layout: 'NCHW', autoOrient: false }));
  dfeFeaturesSync(plain);
  await featureGrid(x);
  await saveImage(x, 'out.png', { index: 0 });
  estimateCost([1, 3, 64, 64]);
  return mghfLoss(x, x, { variant: 'n' });
}

export async function bad(): Promise<void> {
  // @ts-expect-error a Uint8Array is not a tensor
  await mghfLoss(new Uint8Array(10), x);
  // @ts-expect-error a bare Float32Array has no dims
  mghfLossSync(x, new Float32Array(10));
  // @ts-expect-error a number array is not a tensor
  await dfeFeatures([1, 2, 3]);
  // @ts-expect-error dims are required
  dfeFeaturesSync({ data: new Float32Array(3) });
  // @ts-expect-error a string is not a tensor
  await mghfLoss('sr.png', x);
  // @ts-expect-error not a layout
  const chw: ImageLayout = 'CHW';
  // @ts-expect-error saveImage takes a tensor
  await saveImage(new Uint8Array(3), 'a.png');
  // @ts-expect-error loadImage takes a path or bytes
  await loadImage(42);
  // @ts-expect-error an unknown option
  await loadImage('a.png', { orient: true });
  void chw;
}
`;

function check(source: string): ts.Diagnostic[] {
  const dir = mkdtempSync(join(tmpdir(), 'mghf-types-'));
  try {
    const file = join(dir, 'snippet.ts');
    writeFileSync(file, source);
    const program = ts.createProgram([file], {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.CommonJS,
      moduleResolution: ts.ModuleResolutionKind.Node10,
      lib: ['lib.es2022.d.ts'],
      types: ['node'],
      typeRoots: [resolve(__dirname, '..', 'node_modules', '@types')],
      strict: true,
      esModuleInterop: true,
      skipLibCheck: true,
      noEmit: true,
    });
    return [...ts.getPreEmitDiagnostics(program)];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const describeDiagnostic = (d: ts.Diagnostic) => {
  const where = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : undefined;
  return `${d.file?.fileName ?? ''}:${where ? where.line + 1 : '?'}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
};

t.test('the good calls compile and every @ts-expect-error line is an error', async (t) => {
  const diagnostics = check(SNIPPET);
  t.same(diagnostics.map(describeDiagnostic), [], 'no diagnostics (an unused @ts-expect-error would be one)');
});

t.test('without the markers, exactly the marked lines fail', async (t) => {
  const lines = SNIPPET.split('\n');
  const marked = new Set<number>();
  const stripped = lines.map((line, i) => {
    if (!line.includes('@ts-expect-error')) return line;
    marked.add(i + 1); // the line after the marker, 0-based as TypeScript counts lines
    return '';
  });
  t.equal(marked.size, 9);
  const failing = new Set(
    check(stripped.join('\n'))
      .filter((d) => d.file?.fileName.endsWith('snippet.ts'))
      .map((d) => d.file!.getLineAndCharacterOfPosition(d.start!).line),
  );
  t.same([...failing].sort((a, b) => a - b), [...marked].sort((a, b) => a - b), 'each marked line fails, no other line does');
});

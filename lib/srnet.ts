// A small ×4 super-resolution network built from the trainer ops (issue 16): the model
// `mghf upscale` runs and `examples/sr` trains. EDSR-baseline in miniature:
//
//   h  = conv3×3(lr − ½)              3 → C
//   x  = h;  x = x + conv(relu(conv(x)))   × blocks
//   f  = conv3×3(x) + h               (global skip)
//   sr = pixelShuffle₄(conv3×3(f))    C → 3·16 → 3 channels at 4× the size
//        + bicubic₄(lr)               (the network learns the residual over bicubic)
//
// The forward pass keeps what its hand-written backward needs (a tape of tensors); the backward
// returns one gradient per parameter, in `params` order, for `ops.adam`. The parameters live on
// the CPU or on one CUDA device (create/load with { device }, or net.to(device)); the passes then
// run where they are, on inputs on that device, and every intermediate stays there.
import { MghfError } from './errors';
import { scope, untrack } from './lifetime';
import { ops } from './ops';
import { Tensor, type TensorLocation } from './tensor';
import { readTensorFile } from './tensor-file';
import { serializeTensors, writeFileAtomic } from './weights';

export const SR_FORMAT = 'mghf-sr';

export interface SrNetConfig {
  /** Feature channels C (default 32). */
  channels: number;
  /** Residual blocks (default 4). */
  blocks: number;
}

/** What forward() keeps for backward(); dispose() frees it (scope() does too). */
export interface SrTape {
  readonly lrCentred: Tensor;
  readonly head: Tensor;
  /** Input of each residual block and its pre-ReLU / post-ReLU middles. */
  readonly blockIn: Tensor[];
  readonly mid: Tensor[];
  readonly act: Tensor[];
  readonly bodyIn: Tensor;
  readonly tailIn: Tensor;
}

const SCALE = 4;

/** Where a network's parameters go: 'cpu' (default), 'cuda' or 'cuda:N'. */
export interface SrNetPlacement {
  device?: string;
}

/** How many ½-constants (one per input shape and device) a network keeps for its forward pass. */
const CONSTANTS_KEPT = 8;

/** Deterministic uniform numbers (mulberry32): the same seed gives the same network everywhere. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function checkConfig(c: Partial<SrNetConfig> | undefined): SrNetConfig {
  const channels = c?.channels ?? 32;
  const blocks = c?.blocks ?? 4;
  if (!Number.isInteger(channels) || channels < 1 || channels > 512)
    throw new MghfError('E_OPTION', `channels must be an integer in [1, 512], got ${String(channels)}`);
  if (!Number.isInteger(blocks) || blocks < 0 || blocks > 64)
    throw new MghfError('E_OPTION', `blocks must be an integer in [0, 64], got ${String(blocks)}`);
  return { channels, blocks };
}

/** Parameter names and dims of a network of this config, in the order params() lists them. */
export function srParameterShapes(c: SrNetConfig): Array<[string, number[]]> {
  const C = c.channels;
  const out: Array<[string, number[]]> = [
    ['head.weight', [C, 3, 3, 3]],
    ['head.bias', [C]],
  ];
  for (let i = 0; i < c.blocks; i++) {
    out.push([`blocks.${i}.conv1.weight`, [C, C, 3, 3]], [`blocks.${i}.conv1.bias`, [C]]);
    out.push([`blocks.${i}.conv2.weight`, [C, C, 3, 3]], [`blocks.${i}.conv2.bias`, [C]]);
  }
  out.push(['body.weight', [C, C, 3, 3]], ['body.bias', [C]]);
  out.push(['tail.weight', [3 * SCALE * SCALE, C, 3, 3]], ['tail.bias', [3 * SCALE * SCALE]]);
  return out;
}

export class SrNet {
  readonly config: SrNetConfig;
  /** Every parameter by name, tensors on `location` updated in place by ops.adam. */
  readonly params: ReadonlyMap<string, Tensor>;
  /** Where the parameters are: 'cpu' or 'cuda:N'. Inputs of forward/upscale must be there too. */
  readonly location: TensorLocation;
  /** The ½ subtracted from lr, per input dims and device, made once (a device has no host .data to fill). */
  #halves = new Map<string, Tensor>();

  private constructor(config: SrNetConfig, params: Map<string, Tensor>) {
    this.config = config;
    this.params = params;
    this.location = params.values().next().value?.location ?? 'cpu';
  }

  /** A host parameter moved where `placement` says (the host tensor itself when that is the CPU). */
  static #place(t: Tensor, placement: SrNetPlacement | undefined): Tensor {
    const device = placement?.device ?? 'cpu';
    if (device === 'cpu') return keep(t);
    try {
      return keep(t.toSync(device));
    } finally {
      t.dispose();
    }
  }

  /**
   * A new network: PyTorch's default convolution init (uniform ±1/√fan_in for weights and
   * biases), with the tail scaled by 0.1 so that an untrained network is close to bicubic.
   */
  static create(config?: Partial<SrNetConfig>, seed = 1, placement?: SrNetPlacement): SrNet {
    const c = checkConfig(config);
    const rand = mulberry32(seed);
    const params = new Map<string, Tensor>();
    let fanIn = 1;
    for (const [name, dims] of srParameterShapes(c)) {
      // A bias takes the fan-in of the weight listed just before it.
      if (name.endsWith('.weight')) fanIn = dims[1] * dims[2] * dims[3];
      const bound = (name.startsWith('tail.') ? 0.1 : 1) / Math.sqrt(fanIn);
      const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
      for (let i = 0; i < data.length; i++) data[i] = (rand() * 2 - 1) * bound;
      params.set(name, SrNet.#place(new Tensor(data, dims), placement));
    }
    return new SrNet(c, params);
  }

  /** A copy of this network with its parameters on `device` ('cpu', 'cuda' or 'cuda:N'); this one is unchanged. */
  async to(device: string): Promise<SrNet> {
    const params = new Map<string, Tensor>();
    try {
      for (const [name, t] of this.params) params.set(name, keep(await t.to(device)));
    } catch (err) {
      for (const t of params.values()) t.dispose();
      throw err;
    }
    return new SrNet(this.config, params);
  }

  /** Parameters in a fixed order (the order of srParameterShapes). */
  paramList(): Tensor[] {
    return srParameterShapes(this.config).map(([n]) => this.params.get(n)!);
  }

  parameterCount(): number {
    let n = 0;
    for (const t of this.params.values()) n += t.size;
    return n;
  }

  /** Forward pass of lr [B, 3, h, w] in [0, 1] → sr [B, 3, 4h, 4w], and the tape for backward. */
  async forward(lr: Tensor): Promise<{ sr: Tensor; tape: SrTape }> {
    const p = (n: string) => this.params.get(n)!;
    const lrCentred = await ops.add(lr, this.#half(lr), { alpha: -1 });
    const head = await ops.conv2d(lrCentred, p('head.weight'), p('head.bias'));
    const blockIn: Tensor[] = [], mid: Tensor[] = [], act: Tensor[] = [];
    let x = head;
    for (let i = 0; i < this.config.blocks; i++) {
      blockIn.push(x);
      const m = await ops.conv2d(x, p(`blocks.${i}.conv1.weight`), p(`blocks.${i}.conv1.bias`));
      const a = await ops.relu(m);
      const r = await ops.conv2d(a, p(`blocks.${i}.conv2.weight`), p(`blocks.${i}.conv2.bias`));
      mid.push(m);
      act.push(a);
      x = await ops.add(x, r);
      r.dispose();
    }
    const bodyIn = x;
    const body = await ops.conv2d(bodyIn, p('body.weight'), p('body.bias'));
    const tailIn = await ops.add(body, head);
    body.dispose();
    const tail = await ops.conv2d(tailIn, p('tail.weight'), p('tail.bias'));
    const shuffled = await ops.pixelShuffle(tail, SCALE);
    tail.dispose();
    const up = await ops.resize(lr, { scale: SCALE });
    const sr = await ops.add(shuffled, up);
    shuffled.dispose();
    up.dispose();
    return { sr, tape: { lrCentred, head, blockIn, mid, act, bodyIn, tailIn } };
  }

  /** Forward only (inference): sr [B, 3, 4h, 4w], every intermediate freed. */
  async upscale(lr: Tensor): Promise<Tensor> {
    return scope(async () => (await this.forward(lr)).sr);
  }

  /**
   * ∂loss/∂θ for every parameter (paramList() order) from dsr = ∂loss/∂sr. The bicubic skip has
   * no parameters and lr needs no gradient, so the backward starts at the pixel shuffle.
   */
  async backward(tape: SrTape, dsr: Tensor): Promise<Tensor[]> {
    const p = (n: string) => this.params.get(n)!;
    const grads = new Map<string, Tensor>();
    const conv = async (name: string, x: Tensor, dy: Tensor, inputGrad: boolean): Promise<Tensor | undefined> => {
      const g = await ops.conv2dBackward(x, p(`${name}.weight`), dy, { inputGrad });
      grads.set(`${name}.weight`, g.dw!);
      grads.set(`${name}.bias`, g.db!);
      return g.dx;
    };
    const dtail = await ops.pixelShuffleBackward(dsr, SCALE);
    const df = (await conv('tail', tape.tailIn, dtail, true))!;
    // f = body(x_K) + h: df flows to both.
    let dx = (await conv('body', tape.bodyIn, df, true))!;
    for (let i = this.config.blocks - 1; i >= 0; i--) {
      // x_{i+1} = x_i + conv2(relu(conv1(x_i))).
      const da = (await conv(`blocks.${i}.conv2`, tape.act[i], dx, true))!;
      const dm = await ops.reluBackward(tape.mid[i], da);
      const dxi = (await conv(`blocks.${i}.conv1`, tape.blockIn[i], dm, true))!;
      const next = await ops.add(dx, dxi);
      da.dispose();
      dm.dispose();
      dxi.dispose();
      if (dx !== df) dx.dispose();
      dx = next;
    }
    const dh = await ops.add(dx, df);
    await conv('head', tape.lrCentred, dh, false);
    return srParameterShapes(this.config).map(([n]) => grads.get(n)!);
  }

  /**
   * Writes the network as safetensors (format mghf-sr; channels, blocks and scale in the
   * metadata). `extra` tensors (named `state.*`, e.g. an optimiser's moments) and `metadata`
   * strings ride along: a trainer's checkpoint is a model file that `mghf upscale` also reads.
   */
  async save(path: string, opts: { metadata?: Record<string, string>; extra?: ReadonlyArray<{ name: string; dims: readonly number[]; data: Float32Array }> } = {}): Promise<void> {
    for (const e of opts.extra ?? []) {
      if (!e.name.startsWith('state.')) throw new MghfError('E_ARGUMENT', `extra tensor names must start with 'state.', got '${e.name}'`, { argument: 'extra' });
    }
    const entries = [];
    for (const [name, dims] of srParameterShapes(this.config)) entries.push({ name, dims, data: await this.params.get(name)!.getData() });
    const metadata = { ...opts.metadata, format: SR_FORMAT, channels: String(this.config.channels), blocks: String(this.config.blocks), scale: String(SCALE) };
    await writeFileAtomic(path, serializeTensors(metadata, [...entries, ...(opts.extra ?? [])]));
  }

  /** Reads a network saved by save(), its parameters on `placement.device` (default the CPU). */
  static async load(path: string, placement?: SrNetPlacement): Promise<SrNet> {
    return (await SrNet.loadFile(path, placement)).net;
  }

  /**
   * Reads a network saved by save(), with its metadata and `state.*` tensors. E_WEIGHTS_FILE
   * naming the file when it is not an mghf-sr safetensors file, when a tensor is missing, unknown
   * or has the wrong dims, or holds a non-finite value.
   */
  static async loadFile(path: string, placement?: SrNetPlacement): Promise<{ net: SrNet; metadata: Record<string, string>; extra: Map<string, { dims: number[]; data: Float32Array }> }> {
    const loaded = await readTensorFile(path, 'SR model file');
    const md = loaded.metadata;
    const fail = (msg: string): never => {
      throw new MghfError('E_WEIGHTS_FILE', `Invalid SR model file ${path}: ${msg} (expected a model saved by SrNet.save, as examples/sr does)`, { argument: path });
    };
    if (md.format !== SR_FORMAT) fail(`__metadata__.format is ${JSON.stringify(md.format)}, not "${SR_FORMAT}"`);
    if (md.scale !== String(SCALE)) fail(`scale ${JSON.stringify(md.scale)} is not supported (only ×${SCALE})`);
    let config: SrNetConfig;
    try {
      config = checkConfig({ channels: Number(md.channels), blocks: Number(md.blocks) });
    } catch (e) {
      return fail((e as Error).message);
    }
    const params = new Map<string, Tensor>();
    const shapes = srParameterShapes(config);
    for (const [name, dims] of shapes) {
      const t = loaded.tensors.get(name);
      if (!t) return fail(`tensor ${name} is missing`);
      if (t.dims.join(',') !== dims.join(',')) fail(`tensor ${name} has dims [${t.dims.join(',')}], expected [${dims.join(',')}]`);
      params.set(name, keep(new Tensor(t.data, dims)));
    }
    const extra = new Map<string, { dims: number[]; data: Float32Array }>();
    const known = new Set(shapes.map(([n]) => n));
    for (const [name, t] of loaded.tensors) {
      if (known.has(name)) continue;
      if (!name.startsWith('state.')) fail(`tensor ${name} is not part of a ${config.blocks}-block network`);
      extra.set(name, t);
    }
    if (placement?.device !== undefined && placement.device !== 'cpu') {
      // Every tensor checked before any is uploaded: a bad file leaves nothing on the device.
      for (const [name, t] of params) params.set(name, SrNet.#place(t, placement));
    }
    return { net: new SrNet(config, params), metadata: md, extra };
  }

  /** Frees the parameters (and the constants the forward pass kept). */
  dispose(): void {
    for (const t of this.params.values()) t.dispose();
    for (const t of this.#halves.values()) t.dispose();
    this.#halves.clear();
  }

  /**
   * A tensor of ½ with lr's dims, on lr's location, kept for the next forward of that shape (a
   * tiled upscale reuses a handful of tile shapes). The oldest goes once CONSTANTS_KEPT are held.
   */
  #half(lr: Tensor): Tensor {
    const key = `${lr.location} ${lr.dims.join(',')}`;
    let t = this.#halves.get(key);
    if (t === undefined || t.disposed) {
      const fill = new Float32Array(lr.size).fill(0.5);
      t = keep(new Tensor(fill, lr.dims, lr.location === 'cpu' ? undefined : { device: lr.location }));
      if (this.#halves.size >= CONSTANTS_KEPT) {
        const [oldest, old] = this.#halves.entries().next().value!;
        old.dispose();
        this.#halves.delete(oldest);
      }
      this.#halves.set(key, t);
    }
    return t;
  }
}

/** A tensor the network owns outlives any scope() it was created in (dispose() frees it). */
function keep(t: Tensor): Tensor {
  untrack(t);
  return t;
}

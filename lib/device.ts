// Which backend a call runs on: one rule for the loss, the features and pretraining.

import { MghfError, invalidParameterError } from './errors';
import { native } from './native';

export type Device = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;

/** A device resolved to what the native side takes. */
export interface ResolvedDevice {
  device: 'cpu' | 'cuda';
  deviceIndex: number;
}

/**
 * 'auto' (or undefined) → CUDA device 0 when usable, else the CPU. 'cuda' / 'cuda:N' when CUDA is not
 * usable → E_UNSUPPORTED carrying the reason the native side gave; anything else → E_OPTION naming `argument`.
 */
export function resolveDevice(device: unknown, argument = 'opts.device'): ResolvedDevice {
  if (device === 'cpu') return { device: 'cpu', deviceIndex: 0 };
  if (device === undefined || device === 'auto') {
    return native().info().cuda.available ? { device: 'cuda', deviceIndex: 0 } : { device: 'cpu', deviceIndex: 0 };
  }
  const m = typeof device === 'string' ? /^cuda(?::(\d+))?$/.exec(device) : null;
  if (!m) throw invalidParameterError('E_OPTION', argument, "'auto', 'cpu', 'cuda' or 'cuda:N'", device);
  const index = m[1] === undefined ? 0 : Number(m[1]);
  const status = native().info(index).cuda;
  if (!status.available) {
    throw new MghfError(
      'E_UNSUPPORTED',
      `${argument} '${device}' is not available: ${status.reason ?? 'CUDA is not usable'}. ` +
        `Use device 'cpu', or 'auto' to fall back to the CPU.`,
      { argument },
    );
  }
  if (index >= status.deviceCount) {
    throw invalidParameterError('E_OPTION', argument, `a CUDA device index below ${status.deviceCount}`, device);
  }
  return { device: 'cuda', deviceIndex: index };
}

/** 'cpu' or 'cuda:N', as reports name it. */
export function deviceName(d: ResolvedDevice): string {
  return d.device === 'cpu' ? 'cpu' : `cuda:${d.deviceIndex}`;
}

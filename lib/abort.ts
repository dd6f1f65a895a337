// AbortSignal support (issue 13): a call given `signal` rejects at once when it is already aborted,
// and otherwise raises a native cancel flag when it fires, which the core checks between stages,
// DFE blocks, LIP maps and Sinkhorn iterations; the call then rejects with an MghfError of code
// E_ABORTED whose name is 'AbortError' (as fetch's), after the native work has stopped and released
// what it held.

import { MghfError, invalidParameterError } from './errors';
import { type CancelToken, native } from './native';

/** opts.signal checked: undefined or an AbortSignal. */
export function checkSignal(value: unknown, name = 'opts.signal'): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof AbortSignal)) throw invalidParameterError('E_OPTION', name, 'an AbortSignal', value);
  return value;
}

/** The error an aborted call rejects with: code E_ABORTED, name 'AbortError', the signal's reason as cause. */
export function abortedError(what: string, signal: AbortSignal): MghfError {
  const reason = signal.reason as unknown;
  const why = reason instanceof Error && reason.name !== 'AbortError' ? `: ${reason.message}` : '';
  const err = new MghfError('E_ABORTED', `${what} was aborted${why}`, { argument: 'opts.signal', cause: reason });
  err.name = 'AbortError';
  return err;
}

/** Throws the E_ABORTED error when `signal` has already fired. */
export function throwIfAborted(what: string, signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortedError(what, signal);
}

/**
 * Runs `run` with a native cancel token raised when `signal` fires. An E_ABORTED failure becomes
 * `abortedError(what, signal)`; every other outcome passes through. Without a signal, no token.
 */
export async function cancellable<T>(what: string, signal: AbortSignal | undefined, run: (token: CancelToken | undefined) => Promise<T>): Promise<T> {
  if (signal === undefined) return run(undefined);
  throwIfAborted(what, signal);
  const addon = native();
  const token = typeof addon.cancelToken === 'function' ? addon.cancelToken() : undefined;
  const onAbort = () => {
    if (token !== undefined) addon.cancel?.(token);
  };
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    return await run(token);
  } catch (err) {
    if (err instanceof MghfError && err.code === 'E_ABORTED' && signal.aborted) throw abortedError(what, signal);
    throw err;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

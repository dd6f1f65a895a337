// Lifetimes of what the library hands out (issue 15): `dispose()` on every Tensor and op state,
// `scope(fn)` (tf.tidy's rule, for sync and async fn: everything created inside is disposed at
// the end except what fn returns), and the live counts that `memory()` reports. A
// FinalizationRegistry is a safety net for what a user forgot, never the plan.
//
// This module depends on nothing of the library's (tensor.ts imports it).

import { AsyncLocalStorage } from 'node:async_hooks';

/** Anything with a deterministic end: a Tensor, a DFE tape. */
export interface Disposable {
  readonly disposed: boolean;
  dispose(): void;
}

interface Scope {
  items: Set<Disposable>;
  parent: Scope | undefined;
  closed: boolean;
}

// The scope a call runs in follows it across awaits (AsyncLocalStorage), so two concurrent async
// scopes never collect each other's tensors.
const storage = new AsyncLocalStorage<Scope>();
const owner = new WeakMap<Disposable, Scope>();

/** The innermost open scope around the caller (a scope closed while async work it started still runs passes that work up). */
function openScope(s: Scope | undefined): Scope | undefined {
  while (s && s.closed) s = s.parent;
  return s;
}

/** Registers a new disposable with the scope around the caller, if any. */
export function track(obj: Disposable): void {
  const s = openScope(storage.getStore());
  if (!s) return;
  s.items.add(obj);
  owner.set(obj, s);
}

/** Forgets a disposed object (so a long loop inside one scope does not keep its dead objects). */
export function untrack(obj: Disposable): void {
  const s = owner.get(obj);
  if (!s) return;
  s.items.delete(obj);
  owner.delete(obj);
}

// ------------------------------------------------------------------ live host tensors

interface Counter {
  count: number;
  bytes: number;
}
const live = new Map<string, Counter>();
const counter = (location: string): Counter => {
  let c = live.get(location);
  if (!c) live.set(location, (c = { count: 0, bytes: 0 }));
  return c;
};

// A tensor collected without dispose() leaves the count here.
const collected = new FinalizationRegistry<{ location: string; bytes: number }>(({ location, bytes }) => {
  const c = counter(location);
  c.count -= 1;
  c.bytes -= bytes;
});

/** Counts a new tensor of `bytes` at `location` as live until uncount() or its collection. */
export function count(obj: object, location: string, bytes: number): void {
  const c = counter(location);
  c.count += 1;
  c.bytes += bytes;
  collected.register(obj, { location, bytes }, obj);
}

export function uncount(obj: object, location: string, bytes: number): void {
  if (!collected.unregister(obj)) return;
  const c = counter(location);
  c.count -= 1;
  c.bytes -= bytes;
}

/** Live tensors and bytes per location, as counted here. */
export function liveTensors(): Map<string, Counter> {
  return new Map([...live].map(([k, v]) => [k, { ...v }]));
}

// ------------------------------------------------------------------ scope

/**
 * Runs `fn` and disposes every Tensor and DFE tape created while it ran (awaits included, for an
 * async `fn`) except those in its return value: the value itself, or inside arrays, plain objects,
 * Maps and Sets it returns. What is kept belongs to the enclosing scope, if any. When `fn` throws
 * or rejects, everything created inside is disposed.
 */
export function scope<T>(fn: () => Promise<T>): Promise<T>;
export function scope<T>(fn: () => T): T;
export function scope<T>(fn: () => T | Promise<T>): T | Promise<T> {
  const s: Scope = { items: new Set(), parent: openScope(storage.getStore()), closed: false };
  let result: T | Promise<T>;
  try {
    result = storage.run(s, fn);
  } catch (err) {
    close(s, undefined);
    throw err;
  }
  if (isThenable(result)) {
    return Promise.resolve(result).then(
      (value) => {
        close(s, value);
        return value;
      },
      (err: unknown) => {
        close(s, undefined);
        throw err;
      },
    );
  }
  close(s, result);
  return result;
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as { then?: unknown }).then === 'function';
}

function close(s: Scope, kept: unknown): void {
  s.closed = true;
  const keep = new Set<Disposable>();
  collect(kept, keep, new Set(), 0);
  const parent = openScope(s.parent);
  for (const item of s.items) {
    owner.delete(item);
    if (keep.has(item)) {
      if (parent) {
        parent.items.add(item);
        owner.set(item, parent);
      }
    } else {
      item.dispose();
    }
  }
  s.items.clear();
}

// Deep enough for any result shape a trainer returns; cycles are cut by `seen`.
const MAX_DEPTH = 16;

function collect(v: unknown, keep: Set<Disposable>, seen: Set<object>, depth: number): void {
  if (v === null || typeof v !== 'object' || depth > MAX_DEPTH || seen.has(v)) return;
  seen.add(v);
  if (owner.has(v as Disposable)) keep.add(v as Disposable);
  if (Array.isArray(v)) {
    for (const x of v) collect(x, keep, seen, depth + 1);
  } else if (v instanceof Map) {
    for (const x of v.values()) collect(x, keep, seen, depth + 1);
  } else if (v instanceof Set) {
    for (const x of v) collect(x, keep, seen, depth + 1);
  } else if (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null) {
    for (const x of Object.values(v)) collect(x, keep, seen, depth + 1);
  }
}

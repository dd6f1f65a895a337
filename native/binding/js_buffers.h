// Host tensors shared with JavaScript without a copy (issue 15 item 1).
//
// An op's float32 output is handed to JavaScript as an external ArrayBuffer
// over the core Buffer itself. The ArrayBuffer holds one reference
// (JsBufferHolder); a running op that reads the same memory holds another, so
// neither a garbage collection nor a detach (a transfer to a worker) frees
// memory under an async op: it is freed when the last reference goes.
//
// Node's rules for external buffers, and how they are kept:
//  - the finalizer runs later, on the JavaScript thread (node defers it): it
//    only drops the holder's reference, so nothing depends on when it runs;
//  - one memory block must never back two live ArrayBuffers: a block is
//    exposed again (a consumed dS returned as the next op's dS) only after
//    the first ArrayBuffer was detached, and the block cache reuses a block
//    only after every reference to it is gone;
//  - a runtime that forbids external buffers (napi_no_external_buffers_allowed,
//    Electron's V8 sandbox), or any failure to make one, gets a copy, as before.
//
// dispose() (lib/tensor.ts) frees an output now instead of at the next GC:
// release() detaches the ArrayBuffer (every view of it then reads as empty)
// and drops its reference, so the block goes back to the cache at once and
// the next op reuses it without page faults.
#pragma once
#include <napi.h>

#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "buffer.h"

namespace js_buffers {

using mghf::Buffer;
using Shared = std::shared_ptr<Buffer<float>>;

// What one external ArrayBuffer owns: deleted by its finalizer only; `buf`
// may be dropped earlier by release() or consume().
struct JsBufferHolder {
  Shared buf;
};

// The blocks JavaScript holds now, by address: how an op input is recognised
// as one of ours. Touched on JavaScript threads only, but node may run several
// (worker_threads), hence the lock.
class Registry {
 public:
  void add(const void* p, JsBufferHolder* h, size_t bytes) {
    std::lock_guard<std::mutex> l(m_);
    map_[p] = {h, bytes};
    bytes_ += bytes;
  }
  // Forgets p only if it still maps to h (the block may have been reused since).
  void remove(const void* p, JsBufferHolder* h) {
    std::lock_guard<std::mutex> l(m_);
    auto it = map_.find(p);
    if (it == map_.end() || it->second.holder != h) return;
    bytes_ -= it->second.bytes;
    map_.erase(it);
  }
  JsBufferHolder* find(const void* p) {
    std::lock_guard<std::mutex> l(m_);
    auto it = map_.find(p);
    return it == map_.end() ? nullptr : it->second.holder;
  }
  // Blocks JavaScript holds and their bytes: memory()'s view of op outputs not yet freed.
  std::pair<size_t, size_t> live() {
    std::lock_guard<std::mutex> l(m_);
    return {map_.size(), bytes_};
  }

 private:
  struct Entry {
    JsBufferHolder* holder;
    size_t bytes;
  };
  std::mutex m_;
  std::unordered_map<const void*, Entry> map_;
  size_t bytes_ = 0;
};

inline Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: finalizers may run at exit
  return *r;
}

inline void finalize(napi_env, void* data, void* hint) {
  auto* h = static_cast<JsBufferHolder*>(hint);
  registry().remove(data, h);
  delete h;
}

// A Float32Array over `b` without a copy (or a copy where node forbids external buffers).
inline Napi::Float32Array expose(Napi::Env env, Shared b) {
  const size_t n = b ? b->size() : 0;
  if (n > 0) {
    auto* h = new JsBufferHolder{b};
    void* p = b->data();
    napi_value ab;
    const napi_status st = napi_create_external_arraybuffer(env, p, n * sizeof(float), finalize, h, &ab);
    if (st == napi_ok) {
      registry().add(p, h, n * sizeof(float));
      return Napi::Float32Array::New(env, n, Napi::ArrayBuffer(env, ab), 0);
    }
    delete h;  // napi_no_external_buffers_allowed, or any failure: copy
  }
  auto out = Napi::Float32Array::New(env, n);
  if (n) std::copy(b->data(), b->data() + n, out.Data());
  return out;
}

// The holder of the external ArrayBuffer under `a` when `a` views the whole
// of one of ours (not detached), else null.
inline JsBufferHolder* holder_of(const Napi::Float32Array& a) {
  Napi::ArrayBuffer ab = a.ArrayBuffer();
  if (ab.ByteLength() == 0 || a.ByteOffset() != 0) return nullptr;
  JsBufferHolder* h = registry().find(ab.Data());
  if (!h || !h->buf || h->buf->data() != ab.Data() || h->buf->size() != a.ElementLength()) return nullptr;
  return h;
}

// Takes the buffer under `a` away from JavaScript: detaches the ArrayBuffer
// and returns the buffer's reference (null when `a` is not one of ours, or
// cannot be detached). The caller then owns the block.
inline Shared take(const Napi::Float32Array& a) {
  JsBufferHolder* h = holder_of(a);
  if (!h) return nullptr;
  Napi::ArrayBuffer ab = a.ArrayBuffer();
  const void* p = ab.Data();
  if (napi_detach_arraybuffer(a.Env(), ab) != napi_ok) return nullptr;
  registry().remove(p, h);
  Shared b = std::move(h->buf);
  return b;
}

}  // namespace js_buffers

{
  # CPU-only addon: the install-time fallback, which must never need nvcc.
  # The CUDA build lives in CMakeLists.txt (cmake-js).
  "targets": [
    {
      "target_name": "mghf",
      "sources": [
        "native/binding/addon.cc",
        "native/core/parallel.cpp",
        "native/core/block_cache.cpp",
        "native/core/kernels_dispatch.cpp",
        "native/core/kernels_generic.cpp",
        "native/core/kernels_avx2.cpp",
        "native/core/kernels_avx512.cpp",
        
        
        "native/core/backend_cpu.cpp",
        "native/core/ops/registry.cpp",
        "native/core/ops/loss_ops.cpp",
        "native/core/ops/dfe_ops.cpp",
        "native/core/ops/dfe_piece_ops.cpp",
        "native/core/ops/entropy_ops.cpp",
        "native/core/ops/csc_ops.cpp",
        "native/core/ops/lip_ops.cpp",
        "native/core/ops/n_ops.cpp",
        "native/core/ops/trainer_registry.cpp",
        "native/core/ops/conv2d_ops.cpp",
        "native/core/ops/pixel_shuffle_ops.cpp",
        "native/core/ops/activation_ops.cpp",
        "native/core/ops/loss_terms_ops.cpp",
        "native/core/ops/resize_ops.cpp",
        "native/core/ops/adam_ops.cpp",
        "native/core/nn/conv2d.cpp",
        "native/core/train/train_kernels_fast.cpp",
        "native/core/train/train.cpp",
        "native/core/cuda/cuda_stub.cpp"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/core"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags": ["-O3", "-ffp-contract=fast", "-pthread", "-Wall", "-Wextra", "-Werror"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O3", "-ffp-contract=fast", "-pthread", "-Wall", "-Wextra", "-Werror"],
      "ldflags": ["-pthread"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "OTHER_CFLAGS": ["-O3"]
      },
      "msvs_settings": { "VCCLCompilerTool": { "ExceptionHandling": 1, "AdditionalOptions": ["/std:c++17"] } }
    }
  ]
}

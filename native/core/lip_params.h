// Options of the LIP term (SPEC §6), shared by every backend.
#pragma once

namespace mghf {

struct MonceParams {
  double tau = 0.07;    // τ
  double eps_ot = 1.0;  // ε_ot
  double Q = 1.0;
  int iters = 50;       // T_it
  bool sinkhorn_grad = true;
};

struct LipOptions {
  int patch = 32;   // s
  int stride = 16;  // t
  int pmax = 256;   // P_max
  MonceParams monce;
};

}  // namespace mghf

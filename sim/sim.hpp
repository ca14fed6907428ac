#pragma once
// hepsim/sim — the physical system: network description, parameters, activations, readout and
// loss, the vector field G and its relaxation (discrete map, RK4, Dormand–Prince).
// Implements SPEC.md sections 2 (model, dynamics), 5 (initialisation, --angle, weight angle).
//
// Symbols (SPEC notation -> code):
//   u  pre-activations (state)        Mat<S> u, neurons x columns, layers stacked in neuron order
//   s = σ(u)                          activate()
//   G(s, x) = Σ K s_pre + b           input_drive() (the constant part) + add_recurrent()
//   e(s) = ∂ℓ/∂s_out                  add_loss_gradient()
//   M(u) = G(σ(u), x) + β e           Field<S>::map();  du/dt = M(u) − u: Field<S>::operator()
//   θ                                 Vec<R> theta, the flat parameter vector (Network::blocks)
#include "sim/activation.hpp"
#include "sim/analog/substrate.hpp"
#include "sim/error.hpp"
#include "sim/field.hpp"
#include "sim/network.hpp"
#include "sim/random.hpp"
#include "sim/readout.hpp"
#include "sim/relax.hpp"
#include "sim/interrupt.hpp"
#include "sim/types.hpp"

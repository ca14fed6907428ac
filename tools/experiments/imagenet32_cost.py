#!/usr/bin/env python3
"""Cost model of the paper's ImageNet 32x32 run (90 epochs of `cnn`, 1,281,167 images, batch 128)
on R nodes of data-parallel hepsim (`mpirun -np R hepsim train … --threads CORES`).

A step relaxes the global batch in C = min(R x cores, batch) chunks, one per thread (a chunk holds
at least one image), then sums the gradient over the ranks (ep/parallel/team.hpp: a reduce-scatter
and an all-gather, 2 (R - 1)/R x 4P bytes per rank):

    step = (batch / C) / rate_per_core  +  2 (R - 1)/R x 4P / bandwidth

rate_per_core: training images/s of one core on the Table-2 step (T1 = 250, T2 = 40, N = 2),
measured here as 1.1 images/s on 2 cores (README, "Convolutional networks"; tools/compare_torch_cnn.sh);
P = 8,185,576 parameters (cnn with 1000 classes); bandwidth: the interconnect's, an input (the gradient
sum measured on this machine between 2 ranks, tools/experiments/mpi_scaling.sh, ran at 2.1 GB/s).
Usage: tools/experiments/imagenet32_cost.py [--rate 0.55] [--cores 32] [--batch 128]
       [--bandwidth-gbs 1.25 12.5] [--nodes 1 2 4 8]
"""
import argparse

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--rate", type=float, default=1.1 / 2, help="training images/s per core")
p.add_argument("--cores", type=int, default=32, help="cores (threads) per node")
p.add_argument("--batch", type=int, default=128)
p.add_argument("--params", type=int, default=8185576)
p.add_argument("--images", type=int, default=1281167)
p.add_argument("--epochs", type=int, default=90)
p.add_argument("--bandwidth-gbs", type=float, nargs="+", default=[1.25, 12.5], help="GB/s of the interconnect")
p.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8])
a = p.parse_args()
steps = -(-a.images // a.batch)
print("| nodes (cores) | chunks | compute s/step | gradient sum ms/step at %s GB/s | epoch h | %d epochs, days |"
      % (" / ".join("%g" % b for b in a.bandwidth_gbs), a.epochs))
print("|---|---|---|---|---|---|")
for r in a.nodes:
    chunks = min(r * a.cores, a.batch)
    compute = a.batch / chunks / a.rate
    comm = [0.0 if r == 1 else 2 * (r - 1) / r * 4 * a.params / (b * 1e9) for b in a.bandwidth_gbs]
    step = compute + comm[0]
    print("| %d (%d) | %d | %.2f | %s | %.1f | %.1f |" % (
        r, r * a.cores, chunks, compute, " / ".join("%.1f" % (c * 1e3) for c in comm),
        steps * step / 3600, a.epochs * steps * step / 86400))

"""Test driver, one per rank: ``mpiexec -n N python -m tests.distributed.run_rank OUT SOLVER …``.

Trains with :func:`protonet.distributed.train`, then writes ``OUT/rank<r>.npz``: every
learnable param of the train net (``p0``, ``p1``…), the final iteration and the communication
seconds per iteration.
"""

import argparse
import os

import numpy as np

from protonet import distributed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("solver")
    parser.add_argument("--snapshot", default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--no-overlap", action="store_true")
    parser.add_argument("--bucket-bytes", type=int, default=distributed.DEFAULT_BUCKET_BYTES)
    args = parser.parse_args()
    solver = distributed.train(args.solver, snapshot=args.snapshot, iterations=args.iterations,
                               overlap=not args.no_overlap, bucket_bytes=args.bucket_bytes)
    arrays = {f"p{i}": blob.data for i, blob in enumerate(solver.net.learnable_params)}
    np.savez(os.path.join(args.out, f"rank{solver.world.rank}.npz"), iter=solver.iter,
             comm=solver.reducer.seconds_per_iteration(), **arrays)


if __name__ == "__main__":
    main()

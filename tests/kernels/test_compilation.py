"""The compile-time report: Numba compilations are counted and timed, cache loads are not."""

import logging

import numpy as np
from numba import njit

from protonet.kernels import compilation


def test_a_fresh_kernel_counts_once_and_a_second_call_not_at_all(caplog):
    compilation.start()
    compilation.start()                      # idempotent: one listener
    kernels, seconds = compilation.totals()

    @njit                                    # not cached: always a real compilation
    def twice(x):
        return x * np.float32(2)

    assert twice(np.float32(3)) == 6
    after_first = compilation.totals()
    assert after_first[0] == kernels + 1
    assert after_first[1] > seconds
    twice(np.float32(4))
    assert compilation.totals() == after_first

    log = logging.getLogger("protonet.test_compilation")
    with caplog.at_level(logging.INFO, logger=log.name):
        compilation.report(log, "this test")
    assert f"Numba compiled {after_first[0]} kernels in" in caplog.text
    assert "during this test" in caplog.text

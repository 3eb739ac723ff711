"""Every layer case in ../shared/conformance/layers, produced by BVLC Caffe, reproduced exactly."""

import pytest

from tests.helpers.conformance import LAYER_CASES, layer_case_names, run_layer_case

CASES = layer_case_names()


@pytest.mark.skipif(not CASES, reason="../shared/conformance/layers is not beside the checkout")
@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_layer_matches_caffe_reference(case):
    run_layer_case(LAYER_CASES / case)

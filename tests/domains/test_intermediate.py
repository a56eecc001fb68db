"""Intermediate bounds by backward passes: chunked, intersected with IBP, exact on one layer."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    small_cnn_case,
)

import jaxcert


@pytest.mark.parametrize("chunk", [2, 16])  # 32-40 chunks per layer (lax.map) and 4-5 (unrolled)
def test_chunked_intermediate_passes_equal_one_pass(chunk):
    fn, s = small_cnn_case()
    whole = jaxcert.bound(fn, s, "crown", chunk_size=10_000)
    chunked = jaxcert.bound(fn, s, "crown", chunk_size=chunk)
    np.testing.assert_allclose(whole.lower, chunked.lower, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole.upper, chunked.upper, rtol=1e-5, atol=1e-6)


def test_intersecting_with_ibp_only_tightens():
    fn, s = small_cnn_case()
    tight = jaxcert.bound(fn, s, "crown", return_intermediate=True)
    loose = jaxcert.bound(fn, s, "crown", intersect_ibp=False, return_intermediate=True)
    ibp = jaxcert.bound(fn, s, "ibp", return_intermediate=True)
    for name, t in tight.intermediate.items():
        # Within IBP's box at every layer, and within both at the first layer (later
        # layers' adaptive slopes change with the refined bounds: no ordering there).
        others = [ibp.intermediate[name]] + ([loose.intermediate[name]] if name == "relu_0" else [])
        for o in others:
            assert np.all(np.asarray(t.lower) >= np.asarray(o.lower) - 1e-6), name
            assert np.all(np.asarray(t.upper) <= np.asarray(o.upper) + 1e-6), name


def test_first_layer_crown_bounds_are_exact():
    fn, s = small_cnn_case()
    b = jaxcert.bound(fn, s, "crown", return_intermediate=True, intersect_ibp=False)
    ibp = jaxcert.bound(fn, s, "ibp", return_intermediate=True)
    # One affine layer over a box: both are exact, so they agree.
    np.testing.assert_allclose(
        b.intermediate["relu_0"].lower, ibp.intermediate["relu_0"].lower, rtol=1e-5, atol=1e-5
    )

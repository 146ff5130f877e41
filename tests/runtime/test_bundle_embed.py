"""Token lookup reads rows from embed.bin without mapping the pages around them."""

import numpy as np
import pytest

from edgekv.runtime.bundle import Bundle


@pytest.fixture(scope="module")
def int4_bundle(tiny_bundle):  # an 8-bit lm_head: embed.bin serves the token lookup only
    bundle = Bundle.open(tiny_bundle("llama", budget=48, chunk=8, dtype="int4"))
    assert not bundle.manifest.embedding.shared_with_lm_head
    return bundle


def test_rows_read_from_the_file_are_the_table_rows(int4_bundle):
    ids = np.array([0, 7, 7, 499, 3])
    got = int4_bundle.embed(ids)
    assert got.shape == (1, 5, int4_bundle.embedding.shape[1])
    assert np.array_equal(got[0], np.asarray(int4_bundle.embedding)[ids])


def test_an_id_outside_the_vocabulary_is_refused(int4_bundle):
    with pytest.raises(IndexError, match="out of range"):
        int4_bundle.embed(np.array([int4_bundle.embedding.shape[0]]))
    with pytest.raises(IndexError, match="out of range"):
        int4_bundle.embed(np.array([-1]))

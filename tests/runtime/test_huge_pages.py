import numpy as np

from edgekv.runtime import huge_pages


def test_arrays_are_zeroed_aligned_and_apart():
    specs = [((3, 5, 7), np.int64), ((3, 5, 7), bool), ((11,), np.float32), ((2, 2), np.int16)]
    arrays = huge_pages.zeros(specs)
    for (shape, dtype), a in zip(specs, arrays, strict=True):
        assert a.shape == shape and a.dtype == dtype and not a.any()
        assert a.flags.writeable and a.flags.c_contiguous
        assert a.ctypes.data % huge_pages.ALIGN == 0
    for i, a in enumerate(arrays):  # each written whole: the others stay zero
        a[...] = 1
        assert all(not b.any() for b in arrays[i + 1:])
    assert arrays[0].ctypes.data % huge_pages.PAGE == 0  # the block starts on a 2 MiB page

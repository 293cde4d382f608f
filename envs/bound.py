"""Arrays bound once for a compiled call: one int64 table of their addresses and shapes.

numba's dispatch of a call costs about 50 ns per array argument (type check and unboxing), so
a step taking 15 arrays spends most of a single env's kernel call there. A core instead binds
its arrays once (:func:`table`) and passes the table; the compiled entries
(``envs.kernel.step_bound16`` and ``32``, ``envs.kernel_queue.queue_step_bound16`` and ``32``)
rebuild each array from the table with ``numba.carray`` (no copy, no allocation) and call
the same step function.

The table holds raw addresses: it is valid only while the arrays it names are alive and are
not replaced. A core keeps the arrays and rebuilds its table whenever it allocates one of them
(construction, task buffers grown at a reset, unpickling).
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Table entries per array: address, then up to four extents (unused ones 0).
SLOT = 5


def table(arrays: list[np.ndarray]) -> np.ndarray:
    """The int64 table of ``arrays`` (each C-contiguous, at most 4-D), in order."""
    out = np.zeros(SLOT * len(arrays), dtype=np.int64)
    for k, a in enumerate(arrays):
        if not a.flags.c_contiguous or a.ndim > SLOT - 1:
            raise ValueError(f"bound array {k} must be C-contiguous and at most "
                             f"{SLOT - 1}-D, got shape {a.shape}, strides {a.strides}")
        out[SLOT * k] = a.__array_interface__["data"][0]
        out[SLOT * k + 1:SLOT * k + 1 + a.ndim] = a.shape
    return out


@intrinsic
def pointer(typingctx, address):  # noqa: ANN001, ARG001 - numba intrinsic
    """An integer address as a ``void *`` (for ``numba.carray``)."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):  # noqa: ANN001, ARG001
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen

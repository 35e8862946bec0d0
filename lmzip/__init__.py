"""lmzip: lossless compression with a language model and a range coder.

The public API follows Python's ``gzip`` and ``lzma`` modules::

    import lmzip
    blob = lmzip.compress(data)             # bytes -> .lmz bytes, default model
    with lmzip.open("book.lmz", "wb") as f: f.write(data)  # or read back with "rb"
    assert lmzip.decompress(blob) == data   # the model is named in the file

    codec = lmzip.LMZip("smollm2-135m")     # load the model once, reuse it
    blob = codec.compress(data); codec.last_stats

The pipeline, one module each: models -> intmodel, kernels and exact (the integer forward pass)
-> predictor (integer tables for the coder) -> quantize (frequencies) -> coder (range coder) ->
chunking and container (.lmz format) -> codec -> cli. The measurement side (bpc, correlate,
report, benchmark), which runs the model's own float forward pass, lives in ``lmzip.analysis``.
"""

import gc

# The cyclic collector is paused while torch, numba and scipy import: they make so many objects
# that it ran about 500 times and took 0.3 s of a 2.4 s import (Ice Lake Xeon).
_collecting = gc.isenabled()
gc.disable()
try:
    from . import kernels  # noqa: F401, I001  (first: it sets how numba compiles, before any numba function is made)
    from .codec import LMZip, Stats, compress, decompress, open
    from .errors import (ChecksumError, InputError, LmzipError, ModelError, NotLmzipError, OutputExistsError,
                         ReplayError, TruncatedError)
    from .models import DEFAULT_MODEL, REGISTRY, load
finally:
    if _collecting:
        gc.enable()

__all__ = [
    "LMZip", "Stats", "compress", "decompress", "open", "load", "DEFAULT_MODEL", "REGISTRY",
    "LmzipError", "InputError", "OutputExistsError", "NotLmzipError", "TruncatedError", "ChecksumError",
    "ModelError", "ReplayError",
]
__version__ = "0.1.0"

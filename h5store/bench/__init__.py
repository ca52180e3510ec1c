"""Choose a codec and quality for your own images.

    import h5store.bench
    result = h5store.bench.run("my-images/", n=500, min_ssim=0.98, out="bench-results")
    print(result.table())
    print(result.recommendation.message)
    result.recommend(min_psnr=40, prefer="fastest")   # other floors, no new measurements

Every registered codec x each setting in its ``bench_grid`` is measured on the same images:
bytes per image, bits per pixel, compression ratio, encode and decode megapixels per second with
one and two threads, PSNR, SSIM, largest absolute error (checked to be 0 for lossless codecs) and
whether a classifier's predictions survive. The recommendation must also decode about as fast
as the input's own codec (:func:`decode_floor`). Needs the ``bench`` extra (scikit-image,
scikit-learn, matplotlib).

One concern a module: :mod:`.inputs` (what is measured), :mod:`.timing`, :mod:`.metrics`,
:mod:`.classifier`, :mod:`.runner` (the grid), :mod:`.recommend`, :mod:`.report` and
:mod:`.plot` (outputs), :mod:`.cli` (the ``h5store bench`` command).
"""

# scikit-learn, scikit-image and matplotlib are imported inside the functions that use them, so
# that the command line can build its parser (and h5store work) without the bench extra.
from .inputs import BenchInput, load_input
from .recommend import DecodeFloor, Floors, Recommendation, decode_floor, pareto_front, recommend
from .results import BenchResult, CellResult, ClassifierInfo, Skipped
from .runner import measure_cell, plan_grid, run

__all__ = [
    "BenchInput",
    "BenchResult",
    "CellResult",
    "ClassifierInfo",
    "DecodeFloor",
    "Floors",
    "Recommendation",
    "Skipped",
    "decode_floor",
    "load_input",
    "measure_cell",
    "pareto_front",
    "plan_grid",
    "recommend",
    "run",
]

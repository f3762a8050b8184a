"""What the model and its training cost, measured: the code of ``scripts/benchmark.py`` (:mod:`.model`,
:mod:`.deploy`, with the timer of :mod:`.timing`) and ``scripts/gpu_check.py`` (:mod:`.gpu_check`).

The room above training/ and photos/: it runs their code (the real training step, the ONNX export) and nothing in the
package imports it. Figures are ratios against a baseline measured in the same run.
"""

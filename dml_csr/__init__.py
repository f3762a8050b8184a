"""dml_csr: a face-parsing research framework (DML-CSR, CVPR 2022; recurrent propagation, BMVC 2017)."""
__version__ = "0.1.0"

__all__ = ["load_model", "FaceParser"]


def __getattr__(name: str):
    # lazy: importing dml_csr stays cheap (no torch import) until the model API is used
    if name == "load_model":
        from .checkpoint import load_model

        return load_model
    if name == "FaceParser":
        from .photos.parser import FaceParser

        return FaceParser
    raise AttributeError(f"module 'dml_csr' has no attribute '{name}'")


def __dir__() -> list[str]:
    """The lazy exports too, so that completion in a notebook offers ``dml_csr.FaceParser``."""
    return sorted(set(globals()) | set(__all__))

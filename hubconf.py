"""torch.hub entry points: a ready :class:`dml_csr.photos.parser.FaceParser` from a weights name or a checkpoint path.

    parser = torch.hub.load("<owner>/<repo>", "dml_csr", name="dml_csr_helen", device="cpu")
    labels = parser(image_rgb)

Names are the parsing entries of :data:`dml_csr.hub.WEIGHTS` (fetched into ``$DML_CSR_HOME``, default
``~/.cache/dml_csr``, and verified first); a path to one of our checkpoints or an authors' file works as well, and so
do a model folder of ``scripts/export.py --format hf`` and a Hub name, ``hf://OWNER/REPO[@REVISION]``.
"""
dependencies = ["torch", "torchvision", "numpy", "cv2", "yaml"]

# private names: torch.hub.list() shows every public callable here as an entry point
from dml_csr.photos.parser import FaceParser as _FaceParser  # noqa: E402 (torch.hub reads `dependencies` first)


def dml_csr(name: str = "dml_csr_helen", device: str = "cpu", **kwargs) -> "_FaceParser":
    """A FaceParser for weights ``name`` (a registry name, a checkpoint path, a model folder or ``hf://OWNER/REPO``);
    ``kwargs`` go to FaceParser."""
    return _FaceParser.from_checkpoint(name, device=device, **kwargs)  # a name keeps its registry metadata


def dml_csr_helen(device: str = "cpu", **kwargs) -> "_FaceParser":
    """The authors' DML-CSR trained on Helen (11 classes)."""
    return dml_csr("dml_csr_helen", device, **kwargs)


def dml_csr_lapa(device: str = "cpu", **kwargs) -> "_FaceParser":
    """The authors' DML-CSR trained on LaPa (11 classes)."""
    return dml_csr("dml_csr_lapa", device, **kwargs)


def dml_csr_celebamask_hq(device: str = "cpu", **kwargs) -> "_FaceParser":
    """The authors' DML-CSR trained on CelebAMask-HQ (19 classes)."""
    return dml_csr("dml_csr_celebamask_hq", device, **kwargs)

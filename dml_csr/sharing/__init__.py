"""Models that travel: a folder of plain files (:mod:`.folder`: ``model.safetensors``, ``config.json``, the model
card), the Hugging Face Hub's names for them (:mod:`.hf`, ``hf://OWNER/REPO[@REVISION]``) and the authors' Google
Drive share (:mod:`.drive`).

A foundation room: it reads and writes files and names; it builds no model and knows no checkpoint schema beyond
the keys it carries (:mod:`dml_csr.checkpoint` and :mod:`dml_csr.hub` call it, never the reverse).
"""

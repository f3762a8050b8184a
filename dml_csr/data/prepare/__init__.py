"""Conversion of each dataset, as users download it, into the prepared layout read by
:class:`dml_csr.data.dataset.FaceParsingDataset`; plus the prepared-root checker.

One module per dataset (``celebamask_hq``, ``lapa``, ``helen``, ``lfw_pl``, ``facesynthetics``; ``custom``: your own
photos and label maps) lists its samples as :class:`Job`s and converts one sample; :mod:`.common` runs the jobs
(worker pool, progress bar, resume) and writes the lists,
``label_names.txt`` and ``info.json``. The CLIs are ``scripts/prepare_<dataset>.py`` and ``scripts/check_dataset.py``.
This package imports neither torch nor the dataset class, so the scripts start quickly.
"""

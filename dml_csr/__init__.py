"""dml_csr: a face-parsing research framework (DML-CSR, CVPR 2022; recurrent propagation, BMVC 2017)."""
__version__ = "0.1.0"

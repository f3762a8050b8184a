"""``python -m dml_csr.app --checkpoint NAME_OR_PATH``: the web demo, whose code is :mod:`dml_csr.photos.server`."""
from .photos.server import DemoServer, main, make_server

__all__ = ["DemoServer", "main", "make_server"]

if __name__ == "__main__":
    raise SystemExit(main())

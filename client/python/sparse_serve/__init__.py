"""sparse-serve's Python package: call sparse-server with NumPy arrays
(Client, AsyncClient) and write model versions it loads from PyTorch modules
or arrays (sparse_serve.export, with the modules in sparse_serve.nn).
docs/python.md has the guide."""
from sparse_serve.client import (AsyncClient, Client, Cost, ModelInfo, Prediction, Route, SparseServeError,
                                 VersionInfo)

__all__ = ["AsyncClient", "Client", "Cost", "ModelInfo", "Prediction", "Route", "SparseServeError", "VersionInfo"]

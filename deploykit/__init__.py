"""deploykit: Jupyter Notebook or JupyterHub behind nginx and supervisor, in one command."""

__version__ = "0.1.0"

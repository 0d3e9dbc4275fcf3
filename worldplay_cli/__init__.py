"""worldplay: run, queue and train WorldPlay world models from the terminal (torch-free)."""

__version__ = "0.1.0"

"""Reading scenes and writing datasets (torch-free)."""

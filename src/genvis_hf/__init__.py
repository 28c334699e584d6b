"""GenVIS video instance segmentation in the Hugging Face Transformers style."""

__version__ = "0.1.0"

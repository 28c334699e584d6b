from .video_processing_genvis import GenVISVideoProcessor

__all__ = ["GenVISVideoProcessor"]

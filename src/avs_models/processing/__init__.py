"""Pre- and post-processing for audio-visual segmentation: frames + audio in, masks and overlays out."""

from .image_processing_audio_visual import AudioVisualImageProcessor
from .processing_audio_visual import AudioVisualProcessor
from .video_io import DecodedClip, read_audio_file, read_frame_folder, read_video

__all__ = [
    "AudioVisualImageProcessor",
    "AudioVisualProcessor",
    "DecodedClip",
    "read_audio_file",
    "read_frame_folder",
    "read_video",
]

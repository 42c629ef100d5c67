"""Pre- and post-processing for audio-visual segmentation: frames + audio in, masks and overlays out."""

from .image_processing_audio_visual import AudioVisualImageProcessor
from .pipeline_audio_visual_segmentation import AudioVisualSegmentationPipeline, register_pipeline
from .processing_audio_visual import AudioVisualProcessor, audio_feature_extractor_for, processor_for
from .video_io import DecodedClip, read_audio_file, read_frame_folder, read_video
from .visualization import overlay_mask, save_gif, save_mp4, save_png_frames

__all__ = [
    "AudioVisualImageProcessor",
    "AudioVisualProcessor",
    "AudioVisualSegmentationPipeline",
    "DecodedClip",
    "audio_feature_extractor_for",
    "overlay_mask",
    "processor_for",
    "read_audio_file",
    "read_frame_folder",
    "read_video",
    "register_pipeline",
    "save_gif",
    "save_mp4",
    "save_png_frames",
]

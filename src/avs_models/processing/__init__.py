"""Pre- and post-processing for audio-visual segmentation: frames + audio in, masks and overlays out."""

from .image_processing_audio_visual import AudioVisualImageProcessor
from .pipeline_audio_visual_segmentation import AudioVisualSegmentationPipeline, register_pipeline
from .processing_audio_visual import AudioVisualProcessor, audio_feature_extractor_for, processor_for
from .video_io import DecodedClip, VideoReader, read_audio_file, read_frame_folder, read_video
from .visualization import (
    AudioSource,
    GifWriter,
    Mp4Writer,
    draw_legend,
    mask_palette,
    overlay_mask,
    save_gif,
    save_mp4,
    save_png_frames,
    side_by_side,
)

__all__ = [
    "AudioSource",
    "AudioVisualImageProcessor",
    "AudioVisualProcessor",
    "AudioVisualSegmentationPipeline",
    "DecodedClip",
    "GifWriter",
    "Mp4Writer",
    "VideoReader",
    "audio_feature_extractor_for",
    "draw_legend",
    "mask_palette",
    "overlay_mask",
    "processor_for",
    "read_audio_file",
    "read_frame_folder",
    "read_video",
    "register_pipeline",
    "save_gif",
    "save_mp4",
    "save_png_frames",
    "side_by_side",
]

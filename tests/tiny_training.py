"""A tiny PCMANet (ResNet and VGGish shrunk) for training, evaluation and demo tests."""

TINY_MODEL = {
    "model_type": "pcmanet",
    "config": {
        "backbone_config": {
            "model_type": "resnet",
            "embedding_size": 8,
            "hidden_sizes": [8, 16, 24, 32],
            "depths": [1, 1, 1, 1],
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
            "layer_type": "bottleneck",
            "downsample_in_bottleneck": False,
        },
        "audio_config": {
            "model_type": "vggish",
            "stage_channels": [[4], [4], [8, 8], [8, 8]],
            "hidden_sizes": [16, 16],
        },
        "hidden_size": 16,
        "avga_groups": 4,
        "qsca_num_heads": 2,
        "qsca_head_dim": 8,
        "qsca_pool_sizes": [8, 4, 2, 2],
    },
}

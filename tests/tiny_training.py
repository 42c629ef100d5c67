"""Tiny PCMANet, C3N and AVSegFormer configs (backbones and VGGish shrunk) for training, evaluation and demo tests."""

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

TINY_C3N = {
    "model_type": "c3n",
    "config": {
        "backbone_config": {
            "model_type": "pvt_v2",
            "depths": [1, 1, 1, 1],
            "hidden_sizes": [8, 16, 24, 32],
            "num_attention_heads": [1, 1, 1, 1],
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
        },
        "audio_config": {
            "model_type": "vggish",
            "stage_channels": [[4], [4], [8, 8], [8, 8]],
            "hidden_sizes": [16],
            "embedding_size": 8,
            "classifier_hidden_size": 8,
            "num_labels": 5,
        },
        "hidden_size": 16,
        "head_hidden_sizes": [8, 4],
        "num_visual_classes": 6,
        "num_audio_classes": 5,
        "audio_embed_dim": 8,
    },
}

TINY_AVSEGFORMER = {
    "model_type": "avsegformer",
    "config": {
        "backbone_config": TINY_MODEL["config"]["backbone_config"],
        "audio_config": TINY_MODEL["config"]["audio_config"],
        "hidden_size": 16,
        "num_queries": 6,
        "query_generator_layers": 1,
        "query_generator_attention_heads": 2,
        "query_generator_ffn_dim": 32,
        "encoder_layers": 2,
        "encoder_attention_heads": 2,
        "encoder_n_points": 2,
        "encoder_ffn_dim": 32,
        "decoder_layers": 2,
        "decoder_attention_heads": 2,
        "decoder_ffn_dim": 32,
        "mixer_attention_heads": 2,
        "mask_mlp_hidden_size": 16,
        "head_hidden_sizes": [8, 4],
        "group_norm_groups": 4,
    },
}

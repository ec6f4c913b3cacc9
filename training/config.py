"""The embedded model's configuration: the LDM yaml parameters of each part (written into the checkpoint's .yaml by
export.py) and the training budgets. GroupNorm has 32 groups in SD1.x, so every width is a multiple of 32."""

VAE = {
    "embed_dim": 4,
    "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
                 "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0},
}
TEXT = {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 256,
        "vocab_size": 49408, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
UNET = {"image_size": 8, "in_channels": 4, "out_channels": 4, "model_channels": 64, "attention_resolutions": [1, 2],
        "num_res_blocks": 1, "channel_mult": [1, 2], "num_heads": 4, "use_spatial_transformer": True,
        "transformer_depth": 1, "context_dim": 64, "use_checkpoint": False, "legacy": False}
SCHEDULE = {"linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000}
NATIVE = 64  # pixels per side

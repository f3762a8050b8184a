"""The micro DML-CSR config that trains in seconds on the CPU (overrides on top of any config)."""

MICRO = [
    "data.dataset=synthetic", "data.input_size=[64, 64]", "data.batch_size=4", "data.workers=0",
    "model.backbone=resnet18", "model.output_stride=32", "model.context_channels=16",
    "model.decoder_channels=16", "model.edge_channels=8", "model.channel_order=BGR",
    "train.device=cpu", "train.lr=0.01", "train.log_every=1", "train.image_log_every=0", "eval.batch_size=4",
]

"""Images as a second modality: EfficientNet-Lite0, Fashion-MNIST and class-per-folder images."""

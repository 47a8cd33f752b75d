"""models: the preset networks and the LightningModule-style EmotionClassifier."""

"""Training stage: windows of training histories, T4R's Trainer, early stopping, data parallelism, the mask grid."""

"""Data stage: TFRecord shards and public logs in, checked interactions, NVTabular sequences and splits out."""

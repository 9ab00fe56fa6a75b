"""The BERT4Rec (or SASRec) network from T4R blocks, its item features, and a saved run reloaded for scoring."""

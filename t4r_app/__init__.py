"""BERT4Rec movie recommendations on NVIDIA Merlin: ETL with NVTabular, model with Transformers4Rec."""

__version__ = "0.1.0"

"""Text data sources (``data.source``) and transfer sets (``transfer.datasets``), one module each;
the text modality imports every module here, and each registers itself."""

"""Image data sources (``data.source``) and transfer sets (``transfer.datasets``), one module each;
the image modality imports every module here, and each registers itself."""

"""Encoders: small ResNets, ViTs and the text transformer, with their input normalisation."""

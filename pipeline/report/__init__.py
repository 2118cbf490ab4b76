"""The report stage's pieces: markdown, tables and figures from the committed metric files."""

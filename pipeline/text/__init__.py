"""Text self-supervision building blocks (issue 11): masking rule and MLM/CLM losses."""

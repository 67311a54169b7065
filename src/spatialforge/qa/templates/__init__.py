"""Hand-written question and answer templates, one module per question kind."""

"""taskloom-curate: the steps that make judged rows a training set (filter, deduplicate, TRL formats)."""

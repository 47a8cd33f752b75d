"""data: scan, check, cache, split and batch image folders; import FER2013; draw synthetic faces."""

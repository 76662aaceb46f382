"""bisect: the first commit of a kernel repository where migration stops being proven."""

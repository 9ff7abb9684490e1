"""The local node agent: runs the pods bound to its nodes as local processes."""

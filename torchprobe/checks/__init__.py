"""The built-in checks, one module per check. Each imports its heavy
dependencies (torch, pynvml, ssl) inside the check, never at module level."""

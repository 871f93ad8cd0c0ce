"""The klt command line: the local dev stack, the demo and operator tools."""

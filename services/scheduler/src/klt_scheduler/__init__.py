"""klt scheduler: runs the lifecycle phases and releases the scheduling gate."""

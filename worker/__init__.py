"""Workers: one process per GPU (or CPU), running detection jobs from the stream queues."""

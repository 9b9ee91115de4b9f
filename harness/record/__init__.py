"""What a run leaves behind: a cell's identity (cells), its result record and validity (records, energy), the
store that writes and reads a run directory (store), the limits a comparison applies (thresholds), a run folder's
name (names) and the one-line error every layer raises (errors). The lowest layer of harness: it imports only
devices and workloads, and reports read runs through it alone."""

"""What is asked of an analysis: does it fit (fits.py), how long prefill and
decode take on a GPU (latency.py), how it grows over a range of N (sweep.py), how choices and
other counters compare (compare.py, baselines.py).  Each returns data;
render/ shows it."""

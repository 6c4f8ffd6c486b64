"""What is asked of an analysis: does it fit (fits.py), how fast at best
(roofline.py), how it grows over a range of N (sweep.py), how choices and
other counters compare (compare.py, baselines.py).  Each returns data;
render/ shows it."""

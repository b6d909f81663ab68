"""``nova-live-snapshot bench``: measurements side by side, as ratios.

Benchmarks report; they do not pass or fail. Every ratio compares two things
measured in the same run on the same machine, so that the ratio holds on a
noisy host even when the absolute numbers do not.
"""

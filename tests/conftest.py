import os

# Keep the library tests light on the 2-core machines they run on.
os.environ.setdefault("OMP_NUM_THREADS", "2")

"""The machine the studio runs on: the environment a run records, and `studio doctor`.

    environment.py   versions, device and commit, as env.json records them
    doctor.py        what the studio sees here, one verdict and fix per line
"""
